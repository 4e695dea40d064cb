package replication

import (
	"net"
	"strconv"
	"testing"
	"time"

	"github.com/tandemcache/tandem/store"
)

// benchPair starts two replicas of each other on loopback and waits until
// each link is in sync.
func benchPair(b *testing.B, ack AckRule) (*store.Store, *Replicator) {
	b.Helper()
	ports := [2]string{}
	for i := range ports {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			b.Fatal(err)
		}
		ports[i] = l.Addr().String()
		l.Close()
	}
	var first *store.Store
	var firstR *Replicator
	for i := range 2 {
		r, err := New(Config{Listen: ports[i], Peers: []string{ports[1-i]}, NodeID: "n" + strconv.Itoa(i), Ack: ack, Timeout: 2 * time.Second})
		if err != nil {
			b.Fatal(err)
		}
		st, err := store.New(store.Config{MemoryLimit: 64 << 20, Observer: r})
		if err != nil {
			b.Fatal(err)
		}
		if err := r.Start(st); err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { r.Close(); st.Close() })
		if i == 0 {
			first, firstR = st, r
		}
	}
	deadline := time.Now().Add(10 * time.Second)
	for firstR.links[0].state.Load() != stateInSync {
		if time.Now().After(deadline) {
			b.Fatal("peer not in sync after 10 s")
		}
		time.Sleep(time.Millisecond)
	}
	return first, firstR
}

// BenchmarkReplicatedSet is one writer's set plus the wait for its ack: a
// full round trip to the peer per operation (the server's worst case, an
// unpipelined client). Baseline: the same set with replication off.
func BenchmarkReplicatedSet(b *testing.B) {
	val := make([]byte, 100)
	key := []byte("bench:0000000")
	b.Run("off", func(b *testing.B) {
		st, err := store.New(store.Config{MemoryLimit: 64 << 20})
		if err != nil {
			b.Fatal(err)
		}
		defer st.Close()
		b.ReportAllocs()
		for i := 0; b.Loop(); i++ {
			key[len(key)-1] = byte('0' + i%10)
			if _, err := st.Set(key, val, store.SetOptions{}); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("all", func(b *testing.B) {
		st, r := benchPair(b, AckAll)
		b.ReportAllocs()
		for i := 0; b.Loop(); i++ {
			key[len(key)-1] = byte('0' + i%10)
			if _, err := st.Set(key, val, store.SetOptions{}); err != nil {
				b.Fatal(err)
			}
			if err := r.Wait(r.Head()); err != nil {
				b.Fatal(err)
			}
		}
	})
	// Many writers at once: waits overlap and acks cover batches.
	b.Run("all-parallel", func(b *testing.B) {
		st, r := benchPair(b, AckAll)
		b.ReportAllocs()
		b.SetParallelism(16)
		b.RunParallel(func(pb *testing.PB) {
			k := []byte("bench:0000000")
			i := 0
			for pb.Next() {
				i++
				k[len(k)-1], k[len(k)-2] = byte('0'+i%10), byte('0'+i/10%10)
				if _, err := st.Set(k, val, store.SetOptions{}); err != nil {
					b.Fatal(err)
				}
				if err := r.Wait(r.Head()); err != nil {
					b.Fatal(err)
				}
			}
		})
	})
}
