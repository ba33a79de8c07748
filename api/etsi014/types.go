package etsi014

// The JSON data formats of ETSI GS QKD 014 V1.1.1 clause 6. Member names are the standard's,
// case included. Extension members are free-form objects (the standard leaves their content
// to implementations); qkms's own extension members start with "qkms_".

// Status is the Status data format (clause 6.1), the answer of Get status (clause 5.2).
type Status struct {
	SourceKMEID      string         `json:"source_KME_ID"`
	TargetKMEID      string         `json:"target_KME_ID"`
	MasterSAEID      string         `json:"master_SAE_ID"`
	SlaveSAEID       string         `json:"slave_SAE_ID"`
	KeySize          int            `json:"key_size"` // default key size in bits
	StoredKeyCount   int            `json:"stored_key_count"`
	MaxKeyCount      int            `json:"max_key_count"`
	MaxKeyPerRequest int            `json:"max_key_per_request"`
	MaxKeySize       int            `json:"max_key_size"`
	MinKeySize       int            `json:"min_key_size"`
	MaxSAEIDCount    int            `json:"max_SAE_ID_count"` // 0: no multicast
	StatusExtension  map[string]any `json:"status_extension,omitempty"`
}

// KeyRequest is the Key request data format (clause 6.2), the body of Get key (clause 5.3).
// Every member is optional. As handed to Service.GetKey by the handler, Number is at least 1
// (the standard's default is 1) and Size is 0 when the caller did not give one, meaning the
// status key_size; otherwise Size is a positive multiple of 8.
type KeyRequest struct {
	Number                int              `json:"number,omitempty"`
	Size                  int              `json:"size,omitempty"` // bits
	AdditionalSlaveSAEIDs []string         `json:"additional_slave_SAE_IDs,omitempty"`
	ExtensionMandatory    []map[string]any `json:"extension_mandatory,omitempty"`
	ExtensionOptional     []map[string]any `json:"extension_optional,omitempty"`
}

// KeyContainer is the Key container data format (clause 6.3), the answer of Get key and
// Get key with key IDs.
type KeyContainer struct {
	Keys                  []Key          `json:"keys"`
	KeyContainerExtension map[string]any `json:"key_container_extension,omitempty"`
}

// Key is one entry of a KeyContainer. Key holds the key bytes; encoding/json reads and writes
// []byte as standard base64 with padding (RFC 4648 clause 4), the encoding the standard asks.
type Key struct {
	KeyID          string         `json:"key_ID"` // a UUID string in qkms
	KeyIDExtension map[string]any `json:"key_ID_extension,omitempty"`
	Key            []byte         `json:"key"`
	KeyExtension   map[string]any `json:"key_extension,omitempty"`
}

// KeyIDs is the Key IDs data format (clause 6.4), the body of Get key with key IDs
// (clause 5.4).
type KeyIDs struct {
	KeyIDs          []KeyIDEntry   `json:"key_IDs"`
	KeyIDsExtension map[string]any `json:"key_IDs_extension,omitempty"`
}

// KeyIDEntry is one entry of KeyIDs.
type KeyIDEntry struct {
	KeyID          string         `json:"key_ID"`
	KeyIDExtension map[string]any `json:"key_ID_extension,omitempty"`
}

// Error is the Error data format (clause 6.5), the body of every answer other than 200.
type Error struct {
	Message string           `json:"message"`
	Details []map[string]any `json:"details,omitempty"`
}

// DeliveredKey is one key as the Service hands it to the handler and as the Client returns
// it. Extension becomes the entry's key_extension (e.g. {"qkms_provenance": "qkd"}); the
// handler only reads it, so a Service may give many keys the same map.
type DeliveredKey struct {
	ID        string
	Bytes     []byte
	Extension map[string]any
}

// Messages ETSI GS QKD 014 V1.1.1 prescribes for 400 answers (clause 5.3, Get key) and the
// one qkms uses for unknown key IDs (clause 5.4).
const (
	MsgSizeNotMultipleOf8      = "size shall be a multiple of 8"
	MsgMandatoryNotSupported   = "not all extension_mandatory parameters are supported"
	MsgMandatoryNotMet         = "not all extension_mandatory request options could be met"
	MsgOptionalNotHandled      = "not all extension_optional request options handled"
	MsgKeysNotFound            = "one or more keys specified are not found on KME"
	MsgBodyTooLarge            = "request body too large"
	MsgUnauthorizedCertificate = "a client certificate of an SAE is required"
)
