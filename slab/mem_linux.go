//go:build linux

package slab

import "syscall"

// madvHugepage is MADV_HUGEPAGE, which package syscall does not name.
const madvHugepage = 14

// mapRegion returns n bytes of zeroed anonymous memory outside the Go heap.
// MAP_NORESERVE: the limit (-m) is enforced by the allocator, so the kernel
// need not reserve swap for memory that may never be touched. large asks
// for transparent huge pages; a kernel without them (or with them turned
// off) answers with small pages, as it would without the advice.
func mapRegion(n int, large bool) ([]byte, error) {
	b, err := syscall.Mmap(-1, 0, n, syscall.PROT_READ|syscall.PROT_WRITE,
		syscall.MAP_ANON|syscall.MAP_PRIVATE|syscall.MAP_NORESERVE)
	if err == nil && large {
		_ = syscall.Madvise(b, madvHugepage) // advice: small pages still work
	}
	return b, err
}

func unmapRegion(b []byte) error { return syscall.Munmap(b) }
