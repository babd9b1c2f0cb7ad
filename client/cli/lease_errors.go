package cli

import "github.com/pogolab/pogo/api/errdefs"

func fromGRPC(err error) error { return errdefs.FromGRPC(err) }
