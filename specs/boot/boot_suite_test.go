package boot

import (
	"testing"

	"github.com/pogolab/pogo/specs/board"

	// Until drivers/all lists them.
	_ "github.com/pogolab/pogo/drivers/all"
	_ "github.com/pogolab/pogo/drivers/http"
	_ "github.com/pogolab/pogo/drivers/qemu"
	_ "github.com/pogolab/pogo/drivers/tftp"
)

func TestBoot(t *testing.T) { board.RunSpecs(t, "Boot") }
