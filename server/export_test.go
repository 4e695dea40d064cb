package server

// InlineRuns is how many tasks have run on a poller (--low-latency).
func InlineRuns() uint64 { return inlineRuns.Load() }
