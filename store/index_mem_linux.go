//go:build linux

package store

import (
	"syscall"
	"unsafe"
)

// newSlots returns a zeroed table of at least n slots mapped outside the Go
// heap, or nil, false when the table is small or the mapping fails: the
// caller then allocates it on the heap. Tables of a page or
// more are mapped outside the Go heap: the collector neither scans them
// (they hold no pointers anyway) nor lets a replaced table linger until
// the next cycle, so the index costs its size in RSS, not up to twice it
// (GOGC): see docs/performance.md for the RSS per item.
func newSlots(n int) (s []uint64, mapped bool) {
	if n < mmapSlots {
		return nil, false
	}
	bytes := (n*8 + 4095) &^ 4095
	b, err := syscall.Mmap(-1, 0, bytes, syscall.PROT_READ|syscall.PROT_WRITE, syscall.MAP_ANON|syscall.MAP_PRIVATE)
	if err != nil {
		return nil, false // no mapping: the caller allocates on the heap
	}
	return unsafe.Slice((*uint64)(unsafe.Pointer(&b[0])), bytes/8), true
}

// freeSlots releases a table newSlots mapped (mapped true). A heap table
// is left to the collector: unmapping it would unmap the Go heap.
func freeSlots(s []uint64, mapped bool) {
	if !mapped || cap(s) == 0 {
		return
	}
	s = s[:cap(s)]
	_ = syscall.Munmap(unsafe.Slice((*byte)(unsafe.Pointer(&s[0])), len(s)*8))
}
