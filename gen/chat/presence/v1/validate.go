package presencev1

import "github.com/chatrt/chat/gen/internal/fieldcheck"

// Limits of the presence API, as documented on the messages.
const (
	MaxConnIDChars       = 128
	MaxUserIDChars       = 128
	MaxEdgeIDChars       = 64
	MaxUsernameChars     = 64
	MaxOnlineStatusUsers = 1000
)

// Validate checks the request against the documented limits.
func (r *BindRequest) Validate() error {
	return fieldcheck.First(
		fieldcheck.ID("conn_id", r.GetConnId(), 1, MaxConnIDChars),
		fieldcheck.ID("user_id", r.GetUserId(), 1, MaxUserIDChars),
		fieldcheck.Printable("username", r.GetUsername(), 1, MaxUsernameChars),
		fieldcheck.ID("edge_id", r.GetEdgeId(), 1, MaxEdgeIDChars),
	)
}

// Validate checks the request against the documented limits.
func (r *UnbindRequest) Validate() error {
	return fieldcheck.ID("conn_id", r.GetConnId(), 1, MaxConnIDChars)
}

// Validate checks the request against the documented limits.
func (r *HeartbeatRequest) Validate() error {
	return fieldcheck.ID("edge_id", r.GetEdgeId(), 1, MaxEdgeIDChars)
}

// Validate checks the request against the documented limits.
func (r *ReleaseEdgeRequest) Validate() error {
	return fieldcheck.ID("edge_id", r.GetEdgeId(), 1, MaxEdgeIDChars)
}

// Validate checks the request against the documented limits.
func (r *UserConnectionsRequest) Validate() error {
	return fieldcheck.ID("user_id", r.GetUserId(), 1, MaxUserIDChars)
}

// Validate checks the request against the documented limits.
func (r *OnlineStatusRequest) Validate() error {
	ids := r.GetUserIds()
	if err := fieldcheck.Count("user_ids", len(ids), 1, MaxOnlineStatusUsers); err != nil {
		return err
	}
	for _, id := range ids {
		if err := fieldcheck.ID("user_ids[]", id, 1, MaxUserIDChars); err != nil {
			return err
		}
	}
	return nil
}

// MaxBatch is the most items of one BindBatch or UnbindBatch.
const MaxBatch = 256

// Validate checks the number of binds; each bind is checked on its own and answered in its
// own result, so one bad bind does not fail the others.
func (r *BindBatchRequest) Validate() error {
	return fieldcheck.Count("binds", len(r.GetBinds()), 1, MaxBatch)
}

// Validate checks the number of connections; each id is checked on its own and answered in
// its own result.
func (r *UnbindBatchRequest) Validate() error {
	return fieldcheck.Count("conn_ids", len(r.GetConnIds()), 1, MaxBatch)
}
