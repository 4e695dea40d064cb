module github.com/tandemcache/tandem

go 1.26.8

require (
	github.com/HdrHistogram/hdrhistogram-go v1.4.0
	github.com/bradfitz/gomemcache v0.0.0-20260422231931-4d751bb6e37c
	github.com/bytedance/gopkg v0.1.1
	github.com/cespare/xxhash/v2 v2.3.0
	github.com/cloudwego/gopkg v0.1.4
	github.com/cloudwego/netpoll v0.7.2
	github.com/hashicorp/go-msgpack/v2 v2.1.5
	github.com/spf13/pflag v1.1.0
	github.com/stretchr/testify v1.12.1
)

require go.yaml.in/yaml/v3 v3.0.5 // indirect
