// Package all links every driver kind and capability into a binary. It is
// the one place that names driver packages; cmd/jmp imports it.
package all

import (
	_ "github.com/pogolab/pogo/drivers/bmc"
	_ "github.com/pogolab/pogo/drivers/console"
	_ "github.com/pogolab/pogo/drivers/files"
	_ "github.com/pogolab/pogo/drivers/flasher"
	_ "github.com/pogolab/pogo/drivers/http"
	_ "github.com/pogolab/pogo/drivers/power"
	_ "github.com/pogolab/pogo/drivers/power/command"
	_ "github.com/pogolab/pogo/drivers/power/snmp"
	_ "github.com/pogolab/pogo/drivers/power/ykush"
	_ "github.com/pogolab/pogo/drivers/qemu"
	_ "github.com/pogolab/pogo/drivers/serial"
	_ "github.com/pogolab/pogo/drivers/state"
	_ "github.com/pogolab/pogo/drivers/state/uboot"
	_ "github.com/pogolab/pogo/drivers/storage"
	_ "github.com/pogolab/pogo/drivers/tftp"
)
