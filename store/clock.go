package store

import (
	"context"
	"sync/atomic"
	"time"
)

// Clock is a one-second clock in unix seconds, read with one atomic load.
// memcached keeps time the same way: a request never calls time.Now, and all
// expiry arithmetic is in whole seconds. Tests set and advance it by hand.
type Clock struct {
	now atomic.Int64
}

// NewClock returns a clock set to the current time. It does not advance by
// itself: call Run, or Set and Advance.
func NewClock() *Clock {
	c := &Clock{}
	c.now.Store(time.Now().Unix())
	return c
}

// Now is the current time in unix seconds.
func (c *Clock) Now() int64 { return c.now.Load() }

// Set moves the clock to unix second t.
func (c *Clock) Set(t int64) { c.now.Store(t) }

// Advance moves the clock forward by d seconds.
func (c *Clock) Advance(d int64) { c.now.Add(d) }

// Run keeps the clock on the wall time until ctx is done. Ticking ten times
// a second keeps the clock within 100 ms of the wall clock.
func (c *Clock) Run(ctx context.Context) {
	t := time.NewTicker(100 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			c.now.Store(now.Unix())
		}
	}
}
