package pki

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
)

// File names of the development PKI layout.
const (
	CACertFile = "ca.pem"
	CAKeyFile  = "ca-key.pem"
)

// Entity is one certificate of a layout.
type Entity struct {
	ID   string
	Role Role
	KME  string // the KME that serves this SAE or admin; the KME itself for a KME
	Cert string // path of <id>.pem
	Key  string // path of <id>-key.pem (mode 0600)
}

// Layout is what WriteDevPKI wrote.
type Layout struct {
	Dir      string
	CACert   string
	CAKey    string
	Entities []Entity // KMEs in name order, each followed by its SAEs and admin
}

// Find returns the entity named id.
func (l Layout) Find(id string) (Entity, bool) {
	for _, e := range l.Entities {
		if e.ID == id {
			return e, true
		}
	}
	return Entity{}, false
}

// AdminID is the ID of the administrator certificate of site kme when admins are per site.
func AdminID(kme string) string { return "admin-" + kme }

// WriteDevPKI writes a development PKI into dir: ca.pem and ca-key.pem, then <id>.pem and
// <id>-key.pem for every KME of kmes (map KME_ID -> the SAE_IDs it serves) and each of its
// SAEs, plus administrators: one "admin-<KME_ID>" per site when adminPerSite, else a single
// "admin". KME certificates get hosts as extra SANs. An existing CA in dir (both files) is
// reused so that certificates issued earlier stay valid; entity files are overwritten.
// Private keys are written with mode 0600.
func WriteDevPKI(dir string, kmes map[string][]string, adminPerSite bool, hosts ...string) (Layout, error) {
	if len(kmes) == 0 {
		return Layout{}, errors.New("pki: write dev PKI: no KME given")
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return Layout{}, fmt.Errorf("pki: write dev PKI: %w", err)
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		return Layout{}, fmt.Errorf("pki: write dev PKI: %w", err)
	}
	l := Layout{Dir: abs, CACert: filepath.Join(abs, CACertFile), CAKey: filepath.Join(abs, CAKeyFile)}
	ca, err := LoadCA(l.CACert, l.CAKey)
	if errors.Is(err, fs.ErrNotExist) {
		if ca, err = NewCA("qkms development CA"); err == nil {
			err = writeFiles(l.CACert, ca.CertPEM, l.CAKey, ca.KeyPEM())
		}
	}
	if err != nil {
		return Layout{}, fmt.Errorf("pki: write dev PKI CA: %w", err)
	}

	ids := make([]string, 0, len(kmes))
	for k := range kmes {
		ids = append(ids, k)
	}
	sort.Strings(ids)
	// used holds every file name of the layout, so no ID can overwrite another's files
	// (an SAE named "ca" or "X-key" next to "X").
	used := map[string]bool{CACertFile: true, CAKeyFile: true}
	issue := func(role Role, id, kme string, hosts []string) error {
		if err := CheckID(id); err != nil {
			return fmt.Errorf("pki: write dev PKI: %w", err)
		}
		if used[id+".pem"] || used[id+"-key.pem"] {
			return fmt.Errorf("pki: write dev PKI: ID %q clashes with another file of the layout", id)
		}
		used[id+".pem"], used[id+"-key.pem"] = true, true
		certPEM, keyPEM, err := ca.Issue(role, id, hosts)
		if err != nil {
			return err
		}
		e := Entity{ID: id, Role: role, KME: kme,
			Cert: filepath.Join(abs, id+".pem"), Key: filepath.Join(abs, id+"-key.pem")}
		if err := writeFiles(e.Cert, certPEM, e.Key, keyPEM); err != nil {
			return err
		}
		l.Entities = append(l.Entities, e)
		return nil
	}
	for _, kme := range ids {
		if err := issue(RoleKME, kme, kme, hosts); err != nil {
			return Layout{}, err
		}
		for _, sae := range kmes[kme] {
			if err := issue(RoleSAE, sae, kme, nil); err != nil {
				return Layout{}, err
			}
		}
		if adminPerSite {
			if err := issue(RoleAdmin, AdminID(kme), kme, nil); err != nil {
				return Layout{}, err
			}
		}
	}
	if !adminPerSite {
		if err := issue(RoleAdmin, "admin", "", nil); err != nil {
			return Layout{}, err
		}
	}
	return l, nil
}

func writeFiles(certPath string, certPEM []byte, keyPath string, keyPEM []byte) error {
	if err := os.WriteFile(certPath, certPEM, 0o644); err != nil {
		return fmt.Errorf("pki: write %s: %w", certPath, err)
	}
	// Remove first so an existing file with looser permissions does not keep them.
	if err := os.Remove(keyPath); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("pki: replace %s: %w", keyPath, err)
	}
	if err := os.WriteFile(keyPath, keyPEM, 0o600); err != nil {
		return fmt.Errorf("pki: write %s: %w", keyPath, err)
	}
	return nil
}
