// dockerfilelint runs BuildKit's Dockerfile checks (the rules of `docker build --check`) on Dockerfiles, without a
// Docker engine or BuildKit daemon: dockerfile2llb.DockerfileLint, the function the Dockerfile frontend calls for
// a lint request. Base images are not pulled: a stand-in config (the default PATH only) answers for each of them,
// so the checks that need a base image's real config (its ENV, its platform) see only that.
//
// Usage: dockerfilelint DOCKERFILE...  One JSON line per file: {"file", "warnings", "buildError"}; exit 1 when a
// file has a warning or an error, 2 when a file cannot be read.
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"

	"github.com/moby/buildkit/client/llb"
	"github.com/moby/buildkit/client/llb/sourceresolver"
	"github.com/moby/buildkit/frontend/dockerfile/dockerfile2llb"
	"github.com/moby/buildkit/frontend/dockerui"
	digest "github.com/opencontainers/go-digest"
)

// noRegistry resolves every base image to the same minimal config, without the network.
type noRegistry struct{}

func (noRegistry) ResolveImageConfig(ctx context.Context, ref string, opt sourceresolver.Opt) (string, digest.Digest, []byte, error) {
	config := []byte(`{"architecture":"amd64","os":"linux",` +
		`"config":{"Env":["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"]},` +
		`"rootfs":{"type":"layers","diff_ids":[]}}`)
	return ref, digest.FromBytes(config), config, nil
}

func main() {
	failed := false
	for _, path := range os.Args[1:] {
		data, err := os.ReadFile(path)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(2)
		}
		sourceMap := llb.NewSourceMap(nil, path, "Dockerfile", data)
		sourceMap.Definition = &llb.Definition{} // nothing is built: the source has no LLB definition
		results, err := dockerfile2llb.DockerfileLint(context.Background(), data, dockerfile2llb.ConvertOpt{
			Config:       dockerui.Config{},
			MetaResolver: noRegistry{},
			SourceMap:    sourceMap,
		})
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(2)
		}
		line, _ := json.Marshal(map[string]any{"file": path, "warnings": results.Warnings, "buildError": results.Error})
		fmt.Println(string(line))
		if len(results.Warnings) > 0 || results.Error != nil {
			failed = true
		}
	}
	if failed {
		os.Exit(1)
	}
}
