//go:build !linux

package store

// Elsewhere index tables live on the Go heap.
func newSlots(int) ([]uint64, bool) { return nil, false }

func freeSlots([]uint64, bool) {}
