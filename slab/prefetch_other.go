//go:build !amd64

package slab

import "unsafe"

// PrefetchAddr does nothing here: no prefetch instruction is wired up for
// this architecture.
func PrefetchAddr(unsafe.Pointer) {}
