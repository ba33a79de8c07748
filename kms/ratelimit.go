package kms

import "errors"

// ErrRateLimited is a request refused because its SAE exceeded the key rate the site allows it
// (Config.RateLimit in package site, enforced before anything is proposed, so the refused
// request consumes no key). It sits beside the other request sentinels so that the delivery
// APIs can map it: ETSI GS QKD 014 has no 429, so it is a 503 there (clause 5, "Status
// codes": the KME cannot serve the request now), and RESOURCE_EXHAUSTED in gRPC.
var ErrRateLimited = errors.New("kms: request rate limit exceeded")
