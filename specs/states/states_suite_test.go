package states

import (
	"testing"

	"github.com/pogolab/pogo/specs/board"

	_ "github.com/pogolab/pogo/drivers/all"
)

func TestStates(t *testing.T) { board.RunSpecs(t, "Board states") }
