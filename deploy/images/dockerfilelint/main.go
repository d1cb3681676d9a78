// dockerfilelint runs BuildKit's Dockerfile checks (the rules of `docker build --check`) on Dockerfiles, without a
// Docker engine or BuildKit daemon: dockerfile2llb.DockerfileLint, the function the Dockerfile frontend calls for
// a lint request. Base images are not pulled: a stand-in config (the default PATH only) answers for each of them,
// so the checks that need a base image's real config (its ENV, its platform) see only that.
//
// Usage: dockerfilelint DOCKERFILE...  One JSON line per file: {"file", "warnings", "buildError"}; exit 1 when a
// file has a warning or an error, 2 when a file cannot be read.
//
// dockerfilelint --context DIR: the files of DIR that a build with DIR as its context receives, one path a line,
// after DIR/.dockerignore (read and matched by Docker's own ignorefile and patternmatcher packages).
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/moby/buildkit/client/llb"
	"github.com/moby/buildkit/client/llb/sourceresolver"
	"github.com/moby/buildkit/frontend/dockerfile/dockerfile2llb"
	"github.com/moby/buildkit/frontend/dockerui"
	"github.com/moby/patternmatcher"
	"github.com/moby/patternmatcher/ignorefile"
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

// listContext prints the files of dir that its .dockerignore lets into a build context.
func listContext(dir string) error {
	file, err := os.Open(filepath.Join(dir, ".dockerignore"))
	if err != nil {
		return err
	}
	defer file.Close()
	patterns, err := ignorefile.ReadAll(file)
	if err != nil {
		return err
	}
	matcher, err := patternmatcher.New(patterns)
	if err != nil {
		return err
	}
	return filepath.WalkDir(dir, func(path string, entry fs.DirEntry, err error) error {
		if err != nil || entry.IsDir() {
			return err
		}
		relative, err := filepath.Rel(dir, path)
		if err != nil {
			return err
		}
		excluded, err := matcher.MatchesOrParentMatches(relative)
		if err != nil {
			return err
		}
		if !excluded {
			fmt.Println(filepath.ToSlash(relative))
		}
		return nil
	})
}

func main() {
	if len(os.Args) == 3 && os.Args[1] == "--context" {
		if err := listContext(os.Args[2]); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(2)
		}
		return
	}
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
