// Package states holds the board-state specs (labels qemu, boot): a board
// taken from off to each state and between them, the chain each
// transition walked checked from its progress events; the broken latch;
// a power-off in the middle of a transition; a second client's console
// write refused during one; bad configs refused with file:line.
package states
