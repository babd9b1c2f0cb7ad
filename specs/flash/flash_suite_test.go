package flash

import (
	"testing"

	"github.com/pogolab/pogo/specs/board"

	// Until drivers/all lists them.
	_ "github.com/pogolab/pogo/drivers/all"
	_ "github.com/pogolab/pogo/drivers/flasher"
	_ "github.com/pogolab/pogo/drivers/http"
	_ "github.com/pogolab/pogo/drivers/qemu"
	_ "github.com/pogolab/pogo/drivers/tftp"
)

func TestFlash(t *testing.T) { board.RunSpecs(t, "Flash") }
