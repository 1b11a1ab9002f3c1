"""The call log's tables (pbxlink/calllog owns them: nothing else writes them), as migrations.

Never edit a migration that has shipped: databases in the field applied it as it was (a test
pins each text); add the next one to db/migrations.py. The CHECK lists are the record's
vocabulary as it was when each migration shipped (`calls.record.STATUSES`, a test compares).

No `STRICT` tables: they need SQLite 3.37, and Python on RHEL/Rocky 9 (where many Asterisk
boxes live) links 3.34, which cannot even open a database that has one. Types are checked by
the store before writing instead, and the CHECKs below guard the enumerations.
"""

from __future__ import annotations

MIGRATION_1 = """
CREATE TABLE calls (
    call_id         TEXT NOT NULL PRIMARY KEY CHECK (call_id <> ''),
    started_at      REAL NOT NULL,             -- epoch seconds, UTC
    answered_at     REAL,
    ended_at        REAL NOT NULL,             -- the log holds ended calls only
    direction       TEXT NOT NULL CHECK (direction IN ('inbound', 'outbound', 'internal')),
    caller_number   TEXT NOT NULL,
    caller_name     TEXT NOT NULL,
    called_number   TEXT NOT NULL,
    extensions_rung TEXT NOT NULL DEFAULT '[]',  -- JSON list, in ring order
    answered_by     TEXT,
    status          TEXT NOT NULL CHECK (status IN ('answered', 'no_answer', 'busy', \
'abandoned', 'voicemail', 'failed')),
    wait_s          REAL NOT NULL,
    talk_s          REAL NOT NULL,
    hangup_cause    INTEGER,
    queue           TEXT,
    ivr_digits      TEXT NOT NULL DEFAULT '',
    transferred_to  TEXT NOT NULL DEFAULT '[]',  -- JSON list
    recording       TEXT,
    partial         INTEGER NOT NULL CHECK (partial IN (0, 1)),
    client_id       INTEGER,                   -- filled by the client directory
    too_long        INTEGER NOT NULL DEFAULT 0 CHECK (too_long IN (0, 1))
);
CREATE INDEX calls_started ON calls (started_at, call_id);  -- call_id: ties, in order
CREATE INDEX calls_caller ON calls (caller_number, started_at);
CREATE INDEX calls_called ON calls (called_number, started_at);
CREATE INDEX calls_status ON calls (status, started_at);
CREATE INDEX calls_direction ON calls (direction, started_at);
CREATE INDEX calls_client ON calls (client_id, started_at);
CREATE INDEX calls_queue ON calls (queue, started_at);

-- every extension a call involved, so "calls of extension X" is one index range;
-- started_at is the call's, copied here so a time range needs no join to filter
CREATE TABLE call_extensions (
    call_id    TEXT NOT NULL REFERENCES calls (call_id) ON DELETE CASCADE,
    extension  TEXT NOT NULL,
    role       TEXT NOT NULL CHECK (role IN ('caller', 'rang', 'answered', 'transferred')),
    started_at REAL NOT NULL,
    PRIMARY KEY (call_id, extension, role)
) WITHOUT ROWID;
CREATE INDEX call_extensions_extension ON call_extensions (extension, started_at);
"""

# Calls in progress, so a call the daemon saw start still gets its one final record after a
# crash or restart (ended as partial if Asterisk no longer has it). Deleted with the final row.
MIGRATION_2 = """
CREATE TABLE open_calls (
    call_id    TEXT NOT NULL PRIMARY KEY,
    record     TEXT NOT NULL,                  -- JSON of the CallRecord, times as epoch
    updated_at REAL NOT NULL
) WITHOUT ROWID;
"""

# The call log API, service level and recordings (issue 5):
# - offered_at: when the caller started waiting for a person (first ring or queue join),
#   the service level's clock;
# - recording_access: who listened to or downloaded which recording, and when.
MIGRATION_4 = """
ALTER TABLE calls ADD COLUMN offered_at REAL;
CREATE TABLE recording_access (
    call_id  TEXT NOT NULL REFERENCES calls (call_id) ON DELETE CASCADE,
    operator TEXT NOT NULL,
    action   TEXT NOT NULL CHECK (action IN ('listened', 'downloaded')),
    at       REAL NOT NULL
);
CREATE INDEX recording_access_call ON recording_access (call_id, at);
-- service level (calllog/servicelevel.py): a period is one range of this index, which holds
-- everything the sums read, the wait included (the expression must match WAIT_SQL exactly)
CREATE INDEX calls_offered ON calls (direction, offered_at, started_at, status,
    max(coalesce(answered_at, ended_at) - offered_at, 0.0), talk_s, queue);
-- the call log API's keyset pages in talk or wait order, and too-long calls (calllog/query.py)
CREATE INDEX calls_talk ON calls (talk_s, call_id);
CREATE INDEX calls_wait ON calls (wait_s, call_id);
CREATE INDEX calls_too_long ON calls (started_at, call_id) WHERE too_long = 1;
"""

# the times a partial record had to estimate (CallRecord.estimated), a JSON list of names
MIGRATION_5 = """
ALTER TABLE calls ADD COLUMN estimated TEXT NOT NULL DEFAULT '[]';
"""

# the service level leaves estimated times out (docs/metrics.md): `calls_offered` gains which of
# a call's wait and talk are estimates, so the sums still read the index alone (the expression
# must match ESTIMATE_SQL of calllog/servicelevel.py exactly): 0 none, 1 the talk, 3 both
MIGRATION_6 = """
DROP INDEX calls_offered;
CREATE INDEX calls_offered ON calls (direction, offered_at, started_at, status,
    max(coalesce(answered_at, ended_at) - offered_at, 0.0),
    CASE WHEN estimated = '[]' THEN 0 WHEN instr(estimated, CASE WHEN answered_at IS NULL
        THEN '"ended_at"' ELSE '"answered_at"' END) THEN 3 ELSE 1 END,
    talk_s, queue);
"""

# calls.client_id refers to the directory's clients.id: when a client is deleted (by any code
# path), the call log itself unlinks its calls, never leaving them pointing nowhere (or at a
# later client given the same id). The directory's migration 3 did this with a trigger that
# wrote calls; the one writer of calls is the call log, so its own trigger replaces it.
MIGRATION_8 = """
DROP TRIGGER clients_deleted;
CREATE TRIGGER calls_client_deleted AFTER DELETE ON clients BEGIN
    UPDATE calls SET client_id = NULL WHERE client_id = old.id;
END;
"""
