//go:build linux

package slab

import "syscall"

// mapRegion returns n bytes of zeroed anonymous memory outside the Go heap.
// MAP_NORESERVE: the limit (-m) is enforced by the allocator, so the kernel
// need not reserve swap for memory that may never be touched.
func mapRegion(n int) ([]byte, error) {
	return syscall.Mmap(-1, 0, n, syscall.PROT_READ|syscall.PROT_WRITE,
		syscall.MAP_ANON|syscall.MAP_PRIVATE|syscall.MAP_NORESERVE)
}

func unmapRegion(b []byte) error { return syscall.Munmap(b) }
