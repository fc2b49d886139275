package platform

import (
	"context"
	"strings"

	"github.com/redis/go-redis/v9"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// ScriptCall is one run of a Lua script: its keys and arguments.
type ScriptCall struct {
	Keys []string
	Args []any
}

// EvalScripts runs script once per call, in one pipeline (EVALSHA), after the commands that
// before queues (nil: none); each returned command carries its own result or error. Calls
// that Redis refuses with NOSCRIPT (it lost its script cache, so they did not run) are run
// again in one more pipeline after loading the script.
func EvalScripts(ctx context.Context, rdb redis.Cmdable, script *redis.Script, calls []ScriptCall, before func(redis.Pipeliner)) []*redis.Cmd {
	cmds := make([]*redis.Cmd, len(calls))
	pipe := rdb.Pipeline()
	if before != nil {
		before(pipe)
	}
	for i, c := range calls {
		cmds[i] = script.EvalSha(ctx, pipe, c.Keys, c.Args...)
	}
	_, _ = pipe.Exec(ctx) // each command carries its own error
	var again []int
	for i, c := range cmds {
		if IsNoScript(c.Err()) {
			again = append(again, i)
		}
	}
	if len(again) == 0 || script.Load(ctx, rdb).Err() != nil {
		return cmds
	}
	pipe = rdb.Pipeline()
	for _, i := range again {
		cmds[i] = script.EvalSha(ctx, pipe, calls[i].Keys, calls[i].Args...)
	}
	_, _ = pipe.Exec(ctx)
	return cmds
}

// IsNoScript tells whether err is Redis's NOSCRIPT: the script is not in its cache, and did
// not run.
func IsNoScript(err error) bool {
	return err != nil && strings.HasPrefix(err.Error(), "NOSCRIPT")
}

// ItemStatus is the code and message of one item's outcome in a batch reply (0 and "" for
// success), from a gRPC status error or any error.
func ItemStatus(err error) (code uint32, msg string) {
	if err == nil {
		return 0, ""
	}
	st := status.Convert(err)
	return uint32(st.Code()), st.Message()
}

// BatchResults makes the results of a batch reply from each item's answer or error, in order:
// result receives the item's status code and message (0 and "" on success) and its answer.
func BatchResults[Resp, Result any](resps []Resp, errs []error, result func(code uint32, msg string, resp Resp) Result) []Result {
	out := make([]Result, len(resps))
	for i := range resps {
		code, msg := ItemStatus(errs[i])
		out[i] = result(code, msg, resps[i])
	}
	return out
}

// ValidItems checks each of n batch items with validate: an invalid item's error becomes
// InvalidArgument in errs (so it fails alone); it returns the indexes of the valid ones.
func ValidItems(n int, errs []error, validate func(i int) error) []int {
	valid := make([]int, 0, n)
	for i := range n {
		if err := validate(i); err != nil {
			errs[i] = status.Error(codes.InvalidArgument, err.Error())
			continue
		}
		valid = append(valid, i)
	}
	return valid
}
