package states

import (
	"testing"

	"github.com/pogolab/pogo/specs/board"
)

func TestStates(t *testing.T) { board.RunSpecs(t, "Board states") }
