package roomv1

import "github.com/chatrt/chat/gen/internal/fieldcheck"

// Limits of the room API, as documented on the messages.
const (
	MaxRoomChars        = 100
	MaxConnIDChars      = 128
	MaxUserIDChars      = 128
	MaxUsernameChars    = 64
	MaxTextChars        = 4000
	MaxClientMsgIDChars = 64
	DefaultJoinMembers  = 100
	MaxJoinMembers      = 1000
	DefaultHistoryLimit = 50
	MaxHistoryLimit     = 200
	DefaultMembersLimit = 1000
	MaxMembersLimit     = 10000
)

func room(v string) error { return fieldcheck.Printable("room", v, 1, MaxRoomChars) }

func connID(v string) error { return fieldcheck.ID("conn_id", v, 1, MaxConnIDChars) }

func user(id, name string) error {
	return fieldcheck.First(
		fieldcheck.ID("user_id", id, 1, MaxUserIDChars),
		fieldcheck.Printable("username", name, 1, MaxUsernameChars),
	)
}

// Validate checks the request against the documented limits.
func (r *JoinRequest) Validate() error {
	return fieldcheck.First(
		room(r.GetRoom()),
		connID(r.GetConnId()),
		user(r.GetUserId(), r.GetUsername()),
		fieldcheck.Max("member_limit", uint64(r.GetMemberLimit()), MaxJoinMembers),
		fieldcheck.Chars("known_members_version", r.GetKnownMembersVersion(), 0, 64),
	)
}

// Validate checks the request against the documented limits.
func (r *LeaveRequest) Validate() error {
	return fieldcheck.First(room(r.GetRoom()), connID(r.GetConnId()))
}

// Validate checks the request against the documented limits.
func (r *LeaveAllRequest) Validate() error { return connID(r.GetConnId()) }

// Validate checks the request against the documented limits.
func (r *PublishRequest) Validate() error {
	return fieldcheck.First(
		room(r.GetRoom()),
		connID(r.GetConnId()),
		user(r.GetUserId(), r.GetUsername()),
		fieldcheck.Chars("text", r.GetText(), 1, MaxTextChars),
		fieldcheck.Chars("client_msg_id", r.GetClientMsgId(), 0, MaxClientMsgIDChars),
	)
}

// Validate checks the request against the documented limits.
func (r *HistoryRequest) Validate() error {
	return fieldcheck.First(
		room(r.GetRoom()),
		fieldcheck.Max("limit", uint64(r.GetLimit()), MaxHistoryLimit),
	)
}

// Validate checks the request against the documented limits.
func (r *RecoverRequest) Validate() error {
	return fieldcheck.First(
		room(r.GetRoom()),
		fieldcheck.Chars("epoch", r.GetEpoch(), 0, 64),
	)
}

// Validate checks the request against the documented limits.
func (r *MembersRequest) Validate() error {
	return fieldcheck.First(
		room(r.GetRoom()),
		fieldcheck.Max("limit", uint64(r.GetLimit()), MaxMembersLimit),
	)
}

// MaxPublishBatch is the most messages of one PublishBatch.
const MaxPublishBatch = 256

// Validate checks the request against the documented limits.
func (r *PublishBatchRequest) Validate() error {
	if err := fieldcheck.Count("messages", len(r.GetMessages()), 1, MaxPublishBatch); err != nil {
		return err
	}
	for _, m := range r.GetMessages() {
		if err := m.Validate(); err != nil {
			return err
		}
	}
	return nil
}

// MaxBatch is the most items of one JoinBatch or LeaveAllBatch.
const MaxBatch = 256

// Validate checks the number of joins; each join is checked on its own and answered in its
// own result, so one bad join does not fail the others.
func (r *JoinBatchRequest) Validate() error {
	return fieldcheck.Count("joins", len(r.GetJoins()), 1, MaxBatch)
}

// Validate checks the number of connections; each id is checked on its own and answered in
// its own result.
func (r *LeaveAllBatchRequest) Validate() error {
	return fieldcheck.Count("conn_ids", len(r.GetConnIds()), 1, MaxBatch)
}
