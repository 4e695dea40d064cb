package server

import (
	"github.com/tandemcache/tandem/protocol"
)

// Replication's part in a connection. A write is applied to the store at
// once (its Observer hands the new state to the peer links); its reply
// goes into out like any other, and before out is written the connection
// waits until the peers hold every write in it (Replicator.Wait). One wait
// covers a whole batch of pipelined requests, since acks are cumulative.
// Reads never wait unless a write precedes them in the same batch: their
// replies follow the write's.

// replMark is where a write's reply sits in out, to replace it with an
// error if replication cannot acknowledge it.
type replMark struct {
	start, end int
	binary     bool
	opcode     uint8
	opaque     uint32
	meta       bool
	cas        uint64 // a compare-and-swap's new CAS, or 0
}

// textWrite tells whether a text or meta request changes the store.
func textWrite(r *protocol.Request) bool {
	switch r.Cmd {
	case protocol.CmdSet, protocol.CmdAdd, protocol.CmdReplace, protocol.CmdAppend, protocol.CmdPrepend,
		protocol.CmdCas, protocol.CmdIncr, protocol.CmdDecr, protocol.CmdDelete, protocol.CmdTouch,
		protocol.CmdGat, protocol.CmdGats, protocol.CmdFlushAll,
		protocol.CmdMetaSet, protocol.CmdMetaDelete, protocol.CmdMetaArith:
		return true
	case protocol.CmdMetaGet:
		return r.Meta.HasTTL || r.Meta.Vivify
	}
	return false
}

// binaryWrite tells whether a binary opcode (quiet ones mapped to their
// loud form) changes the store.
func binaryWrite(op uint8) bool {
	switch op {
	case protocol.OpSet, protocol.OpAdd, protocol.OpReplace, protocol.OpAppend, protocol.OpPrepend,
		protocol.OpDelete, protocol.OpIncrement, protocol.OpDecrement,
		protocol.OpTouch, protocol.OpGAT, protocol.OpGATK, protocol.OpFlush:
		return true
	}
	return false
}

// refuseWrite answers a text write with SERVER_ERROR, without running it,
// when replication could not acknowledge it now. A storage command's data
// block is then dropped as it arrives.
func (c *conn) refuseWrite() bool {
	err := c.s.repl.Writable()
	if err == nil {
		return false
	}
	reply := &protocol.ErrorReply{Reply: "SERVER_ERROR " + err.Error()}
	if c.req.Cmd.IsStorage() {
		c.req.SwallowErr = reply
		return true
	}
	if !c.req.NoReply {
		c.out = protocol.AppendLine(c.out, reply.Reply)
	}
	return true
}

// wrote records a write whose reply starts at mark in out: out is not
// written before the peers acknowledge it.
func (c *conn) wrote(mark int, b *binRequest) {
	c.replSeq = c.s.repl.Head()
	cas := c.casWrote
	c.casWrote = 0
	// Only meta commands set Meta.Quiet (Parse starts from a zero Request).
	quiet := b != nil && b.quiet || b == nil && c.req.Meta.Quiet
	if len(c.out) == mark && !quiet {
		return // noreply: the client asked for no answer, even an error
	}
	// A quiet write (meta q, binary ...Q) answers nothing on success but
	// must still hear a failure: its mark is empty, and an error reply
	// is inserted there if need be.
	m := replMark{start: mark, end: len(c.out), cas: cas}
	if b != nil {
		m.binary, m.opcode, m.opaque = true, b.Opcode, b.Opaque
	} else {
		m.meta = c.req.Cmd == protocol.CmdMetaSet
	}
	c.replMarks = append(c.replMarks, m)
}

// settle waits for the peers to acknowledge the writes in out; if they
// cannot, those writes' replies become errors that say why. A
// compare-and-swap that a peer overruled (the same token used on another
// node at the same moment, and that write won) is answered as the CAS
// mismatch it turned out to be, so that one token succeeds once. out is
// copied only when a reply changes.
func (c *conn) settle() {
	seq := c.replSeq
	c.replSeq = 0
	err := c.s.repl.Wait(seq)
	o, prev, changed := c.replOut[:0], 0, false
	for _, m := range c.replMarks {
		if err == nil && (m.cas == 0 || !c.s.repl.Overruled(m.cas)) {
			continue
		}
		o = append(o, c.out[prev:m.start]...)
		o = c.appendReplaced(o, &m, err)
		prev, changed = m.end, true
	}
	if changed {
		o = append(o, c.out[prev:]...)
		c.out, c.replOut = o, c.out[:0]
	}
	c.replMarks = c.replMarks[:0]
}

// appendReplaced appends what the write at m answers instead of its reply:
// the replication error, or (err nil) EXISTS for an overruled CAS.
func (c *conn) appendReplaced(o []byte, m *replMark, err error) []byte {
	switch {
	case err != nil && m.binary:
		return protocol.AppendBinaryError(o, m.opcode, protocol.StatusTempFailure, m.opaque, err.Error())
	case err != nil:
		return protocol.AppendLine(o, "SERVER_ERROR "+err.Error())
	case m.binary:
		return protocol.AppendBinaryError(o, m.opcode, protocol.StatusKeyExists, m.opaque,
			protocol.StatusText(protocol.StatusKeyExists))
	case m.meta && m.start == m.end:
		return protocol.AppendLine(o, "EX") // quiet: no flags were written to keep
	case m.meta:
		// Keep the flags the client asked back (O, k, ...): only the code changes.
		return append(append(o, "EX"...), c.out[m.start+2:m.end]...)
	}
	return protocol.AppendLine(o, "EXISTS")
}
