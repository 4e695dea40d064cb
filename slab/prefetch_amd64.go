package slab

import "unsafe"

// PrefetchAddr asks the CPU to start loading the cache line at p. It never
// faults, even on memory that is not mapped, and changes nothing the
// program can observe.
//
//go:noescape
func PrefetchAddr(p unsafe.Pointer)
