package authv1

import "github.com/chatrt/chat/gen/internal/fieldcheck"

// Limits of the auth API, as documented on the messages.
const (
	MinPasswordBytes = 8
	MaxPasswordBytes = 256
	MaxTokenChars    = 256
)

// Validate checks the request against the documented limits.
func (r *RegisterRequest) Validate() error {
	return fieldcheck.First(
		fieldcheck.Username("username", r.GetUsername()),
		fieldcheck.Bytes("password", r.GetPassword(), MinPasswordBytes, MaxPasswordBytes),
	)
}

// Validate checks the request against the documented limits.
func (r *LoginRequest) Validate() error {
	return fieldcheck.First(
		fieldcheck.Username("username", r.GetUsername()),
		fieldcheck.Bytes("password", r.GetPassword(), MinPasswordBytes, MaxPasswordBytes),
	)
}

// Validate checks the request against the documented limits.
func (r *VerifyTokenRequest) Validate() error {
	return fieldcheck.Bytes("token", r.GetToken(), 1, MaxTokenChars)
}

// Validate checks the request against the documented limits.
func (r *LogoutRequest) Validate() error {
	return fieldcheck.Bytes("token", r.GetToken(), 1, MaxTokenChars)
}

// MaxVerifyBatch is the most tokens of one VerifyTokenBatch.
const MaxVerifyBatch = 256

// Validate checks the number of tokens; each token is checked on its own and answered in its
// own result, so one bad token does not fail the others.
func (r *VerifyTokenBatchRequest) Validate() error {
	return fieldcheck.Count("tokens", len(r.GetTokens()), 1, MaxVerifyBatch)
}
