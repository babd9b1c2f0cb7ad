package store

import (
	"time"
)

// Meta is where a record stands in etcd; writes compare Mod.
type Meta struct {
	// Create is the key's create revision: for leases, the queue order.
	Create int64 `json:"-"`
	Mod    int64 `json:"-"`
}

// Identity is a client or exporter credential; only the token's hash is
// kept.
type Identity struct {
	Meta
	Name      string    `json:"name"`
	TokenHash string    `json:"tokenHash"`
	Created   time.Time `json:"created"`
}

// Exporter is an exporter's identity plus what it last registered.
type Exporter struct {
	Meta
	Name      string `json:"name"`
	TokenHash string `json:"tokenHash"`
	// Disabled exporters are never granted.
	Disabled   bool              `json:"disabled,omitempty"`
	Labels     map[string]string `json:"labels,omitempty"`
	Report     []byte            `json:"report,omitempty"`
	Created    time.Time         `json:"created"`
	Registered time.Time         `json:"registered,omitzero"`
	// TunnelCert is the SHA-256 of the certificate the exporter presents
	// on end-to-end tunnels (new with each exporter process).
	TunnelCert string `json:"tunnelCert,omitempty"`
}

// Online says an exporter's Listen stream is open on a replica. The key
// is bound to that replica's etcd lease, so it vanishes with the replica.
type Online struct {
	Meta
	Replica string `json:"replica"`
	Router  string `json:"router"`
	// Tunnels is the replica's tunnel security (a pb.TunnelSecurity).
	Tunnels int32     `json:"tunnels,omitempty"`
	Since   time.Time `json:"since"`
}

// Policy is what a client may do.
type Policy struct {
	Meta
	Client   string `json:"client"`
	Priority int    `json:"priority"`
	Selector string `json:"selector,omitempty"`
}

// Lease is a lease request and, once granted, the grant.
type Lease struct {
	Meta
	ID           string            `json:"id"`
	Client       string            `json:"client"`
	Selector     string            `json:"selector,omitempty"`
	ExporterName string            `json:"exporterName,omitempty"`
	Duration     time.Duration     `json:"duration"`
	Begin        time.Time         `json:"begin,omitzero"`
	Tags         map[string]string `json:"tags,omitempty"`
	Priority     int               `json:"priority"`
	State        State             `json:"state"`
	Exporter     string            `json:"exporter,omitempty"`
	Created      time.Time         `json:"created"`
	Granted      time.Time         `json:"granted,omitzero"`
	End          time.Time         `json:"end,omitzero"`
	Reason       string            `json:"reason,omitempty"`
}

// Final reports whether the lease can no longer change.
func (l *Lease) Final() bool { return l.State.Final() }

// Clone returns a copy safe to modify.
func (l *Lease) Clone() *Lease {
	c := *l
	return &c
}
