//go:build !linux

package slab

// On systems without the Linux mmap flags the pages come from the Go heap.
// They hold no pointers, so the collector still does not scan them, but they
// count towards the heap size that GOGC paces against.
func mapRegion(n int, _ bool) ([]byte, error) { return make([]byte, n), nil }

func unmapRegion([]byte) error { return nil }
