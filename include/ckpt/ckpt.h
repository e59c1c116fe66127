/*
 * libckpt: the C API of ckpt, a replicated checkpoint service for Pacemaker/Corosync clusters.
 *
 * An application keeps its state in a named checkpoint *segment*.  On the node that owns it the
 * segment is a shared-memory file the application maps directly (ckpt_segment_data()); the
 * application writes its state there (or with ckpt_write()), declares what changed, and calls
 * ckpt_commit().  The node's daemon ckptd replicates every committed version to R replica nodes it
 * chooses itself.  After a failover, ckpt_pull() (or `ckptctl pull`, or the ocf:ckpt:checkpoint
 * agent) brings the newest replicated version into the new node's local storage and makes that
 * node the owner; the application then opens the segment and finds its state in the mapping.
 *
 * Return values: every function returning int returns CKPT_OK (0) on success, CKPT_NO_CHECKPOINT
 * (1) where documented, or a negative ckpt_status_t.  ckpt_strerror() describes any of them;
 * ckpt_last_error() gives the daemon's detailed message for the last failed call on a client.
 *
 * Threads: a ckpt_client_t and the segments opened through it must be used by one thread at a time.
 * Use one client per thread for concurrent use.
 */
#ifndef CKPT_CKPT_H
#define CKPT_CKPT_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef enum ckpt_status {
  CKPT_OK = 0,
  CKPT_NO_CHECKPOINT = 1,    /* pull/read: no node holds any version; start fresh (not an error) */
  CKPT_ERR_INVALID = -1,     /* an argument is invalid (NULL pointer, range outside the segment...) */
  CKPT_ERR_NAME = -2,        /* segment name empty, longer than 128 bytes or with bad characters */
  CKPT_ERR_NOT_FOUND = -3,   /* no such segment (or no such version) */
  CKPT_ERR_EXISTS = -4,      /* segment exists with a different size (open with CKPT_OPEN_CREATE) */
  CKPT_ERR_PERMISSION = -5,  /* the caller's uid/gid may not do this to this segment */
  CKPT_ERR_TOO_LARGE = -6,   /* size above ckptd's max-segment-size, or a message too large */
  CKPT_ERR_NO_SPACE = -7,    /* ckptd's max-total-bytes would be exceeded, or the disk is full */
  CKPT_ERR_FENCED = -8,      /* another node took ownership (newer epoch): this writer is stale */
  CKPT_ERR_CONFLICT = -9,    /* a concurrent pull/create on another node won; nothing changed here */
  CKPT_ERR_TIMEOUT = -10,    /* the operation did not finish within its timeout */
  CKPT_ERR_UNAVAILABLE = -11,/* ckptd is not running, not reachable, or not in the cluster */
  CKPT_ERR_NOT_OWNER = -12,  /* the segment is owned by another node: pull it first */
  CKPT_ERR_REPLICAS = -13,   /* fewer eligible nodes than the replica count: cannot reach R copies */
  CKPT_ERR_CORRUPT = -14,    /* stored data failed its checksum (another holder is tried first) */
  CKPT_ERR_IO = -15,         /* a local I/O error (see ckpt_last_error) */
  CKPT_ERR_PROTOCOL = -16,   /* malformed or incompatible message between libckpt and ckptd */
  CKPT_ERR_NO_MEMORY = -17,  /* out of memory */
  CKPT_ERR_BUSY = -18,       /* the segment is open for writing by another process on this node */
  CKPT_ERR_INTERNAL = -19    /* a bug: please report with ckptd's log */
} ckpt_status_t;

/* A segment version: epoch grows on every change of owner, seq on every commit. (0,0) = none. */
typedef struct ckpt_version {
  uint64_t epoch;
  uint64_t seq;
} ckpt_version_t;

typedef struct ckpt_client ckpt_client_t;
typedef struct ckpt_segment ckpt_segment_t;

enum ckpt_durability {
  CKPT_DURABILITY_DEFAULT = 0, /* ckptd's configured default */
  CKPT_DURABILITY_MEMORY = 1,  /* replicas write version files without fsync */
  CKPT_DURABILITY_FSYNC = 2    /* replicas fsync each version file (and directory) before acking */
};

enum ckpt_open_flags {
  CKPT_OPEN_CREATE = 1u << 0, /* create the segment when it does not exist anywhere in the cluster */
  CKPT_OPEN_PULL = 1u << 1,   /* when another node owns it, pull it here first (as ckpt_pull) */
  CKPT_OPEN_COMPRESS = 1u << 2 /* with CKPT_OPEN_CREATE: replicate the segment zstd-compressed */
};

/* How a segment's replication messages travel (fixed when the segment is created). */
enum ckpt_compression {
  CKPT_COMPRESSION_NONE = 0,
  CKPT_COMPRESSION_ZSTD = 1 /* each DATA message compressed (fast level) when that saves space */
};

typedef struct ckpt_open_options {
  uint64_t size;           /* bytes; required with CKPT_OPEN_CREATE, else 0 or the existing size */
  uint32_t replicas;       /* R, replicas besides the owner; 0 = ckptd default */
  uint32_t versions_kept;  /* versions each holder keeps; 0 = ckptd default */
  uint32_t durability;     /* enum ckpt_durability */
  uint32_t mode;           /* permission bits for group/other (like a file); 0 = 0600 */
  uint32_t flags;          /* enum ckpt_open_flags */
  uint32_t pull_timeout_ms;/* with CKPT_OPEN_PULL; 0 = 60000 */
} ckpt_open_options_t;

#define CKPT_MAX_NAME_LEN 128

/* ---- connection ---------------------------------------------------------------------------- */

/* Connects to the local ckptd.  Errors: CKPT_ERR_INVALID (out NULL), CKPT_ERR_UNAVAILABLE (ckptd
 * not running), CKPT_ERR_PERMISSION (ckptd refused this uid), CKPT_ERR_PROTOCOL (version
 * mismatch), CKPT_ERR_NO_MEMORY. */
int ckpt_connect(ckpt_client_t **out);

/* Closes every segment opened through the client and the connection.  NULL is ignored. */
void ckpt_disconnect(ckpt_client_t *client);

/* The daemon's message for the last failed call on this client ("" if none). Never NULL. */
const char *ckpt_last_error(const ckpt_client_t *client);

/* Static text for any return value.  Never NULL. */
const char *ckpt_strerror(int status);

/* ---- the owner's segment --------------------------------------------------------------------- */

/* Opens a segment for writing on this node and maps its local storage.  The segment must be owned
 * by this node (or created/pulled with the flags).  Only one open writer per segment per node.
 * Errors: CKPT_ERR_INVALID, CKPT_ERR_NAME, CKPT_ERR_NOT_FOUND (absent and no CKPT_OPEN_CREATE),
 * CKPT_ERR_EXISTS (size differs), CKPT_ERR_TOO_LARGE, CKPT_ERR_NO_SPACE, CKPT_ERR_PERMISSION,
 * CKPT_ERR_NOT_OWNER (owned elsewhere and no CKPT_OPEN_PULL), CKPT_ERR_CONFLICT (another node
 * created/pulled it at the same time), CKPT_ERR_BUSY, CKPT_ERR_TIMEOUT (pull), CKPT_ERR_IO
 * (mapping failed), CKPT_ERR_UNAVAILABLE, CKPT_ERR_PROTOCOL, CKPT_ERR_NO_MEMORY. */
int ckpt_open(ckpt_client_t *client, const char *name, const ckpt_open_options_t *options,
              ckpt_segment_t **out);

/* The writable mapping of the segment's local storage (ckpt_segment_size() bytes). */
void *ckpt_segment_data(ckpt_segment_t *segment);
uint64_t ckpt_segment_size(const ckpt_segment_t *segment);
/* The version the mapping held when opened, or the last version committed through this handle. */
ckpt_version_t ckpt_segment_version(const ckpt_segment_t *segment);

/* Copies len bytes into the mapping at offset and marks them dirty.
 * Errors: CKPT_ERR_INVALID (NULL, or the range is outside the segment). */
int ckpt_write(ckpt_segment_t *segment, uint64_t offset, const void *buf, uint64_t len);

/* Declares [offset, offset+len) of the mapping changed since the last commit.
 * Errors: CKPT_ERR_INVALID (range outside the segment). */
int ckpt_mark_dirty(ckpt_segment_t *segment, uint64_t offset, uint64_t len);

enum ckpt_commit_flags {
  CKPT_COMMIT_SYNC = 1u << 0, /* return only after R replicas acknowledged this version */
  CKPT_COMMIT_ALL = 1u << 1   /* commit the whole segment, whatever was marked dirty */
};

/* Takes a new version from the dirty ranges.  The bytes are copied before the call returns, so the
 * application may write again at once: a replica or a restore sees all of one commit or none.
 * Asynchronous by default: returns once the version is queued; a failure of an earlier
 * asynchronous commit (e.g. CKPT_ERR_FENCED) is returned by the next call on the segment.
 * With CKPT_COMMIT_SYNC, waits up to timeout_ms (0 = 30000) for R acknowledgements.
 * version (may be NULL) receives the committed version.
 * Errors: CKPT_ERR_INVALID, CKPT_ERR_FENCED, CKPT_ERR_NOT_OWNER, CKPT_ERR_TIMEOUT (sync: the
 * version is committed locally but fewer than R replicas acknowledged in time), CKPT_ERR_REPLICAS
 * (sync: fewer than R eligible nodes; the version is committed locally all the same),
 * CKPT_ERR_NOT_FOUND (the segment was deleted), CKPT_ERR_UNAVAILABLE, CKPT_ERR_PROTOCOL,
 * CKPT_ERR_NO_MEMORY.  CKPT_ERR_TIMEOUT also when ckptd's request queue stays full for 30 s. */
int ckpt_commit(ckpt_segment_t *segment, uint32_t flags, uint32_t timeout_ms,
                ckpt_version_t *version);

/* Waits up to timeout_ms (0 = 30000) until R replicas acknowledged the latest committed version.
 * Errors: as the CKPT_COMMIT_SYNC errors of ckpt_commit. */
int ckpt_flush(ckpt_segment_t *segment, uint32_t timeout_ms);

/* ckpt_flush for every segment open on this client, in one call: waits up to timeout_ms
 * (0 = 30000) until each has R acknowledgements of its latest committed version.  Returns the
 * first failure (a pending error of an earlier asynchronous commit on one of them first; then
 * e.g. CKPT_ERR_TIMEOUT naming a segment that was not acknowledged in time); CKPT_OK when no
 * segment is open.  Errors: as ckpt_flush. */
int ckpt_flush_all(ckpt_client_t *client, uint32_t timeout_ms);

/* Unmaps and closes the handle (the segment stays, and stays owned by this node).  NULL ignored. */
void ckpt_close(ckpt_segment_t *segment);

/* ---- any node -------------------------------------------------------------------------------- */

/* Brings the newest version held by any live holder (or, failing that, the global directory) into
 * this node's local storage, verifies its checksum and makes this node the owner (new epoch).
 * Returns CKPT_OK (version receives what was installed), or CKPT_NO_CHECKPOINT when no holder has
 * any version (the application starts fresh; nothing is created).  The restored bytes are
 * relabelled into this node's new epoch (same seq).  Already the owner (in this ckptd's lifetime):
 * reinstalls the last committed version into local storage (uncommitted writes are dropped) and
 * returns CKPT_OK; CKPT_ERR_BUSY if a writer has it open.
 * Errors: CKPT_ERR_NAME, CKPT_ERR_PERMISSION, CKPT_ERR_CONFLICT (another node's concurrent pull
 * won), CKPT_ERR_TIMEOUT (timeout_ms, 0 = 60000), CKPT_ERR_CORRUPT (every copy failed its
 * checksum), CKPT_ERR_BUSY, CKPT_ERR_NO_SPACE, CKPT_ERR_IO, CKPT_ERR_UNAVAILABLE. */
int ckpt_pull(ckpt_client_t *client, const char *name, uint32_t timeout_ms,
              ckpt_version_t *version);

/* Waits (timeout_ms, 0 = 30000) for R acknowledgements of the latest version, then gives up
 * ownership so another node can pull without a new epoch race.  The data stays replicated.
 * Not owner: CKPT_OK.  Errors: as ckpt_flush, plus CKPT_ERR_BUSY (a writer has it open). */
int ckpt_release(ckpt_client_t *client, const char *name, uint32_t timeout_ms);

/* Reads len bytes at offset of a version (NULL = the newest held anywhere) into buf; served from
 * this node's store when it holds it, else fetched from a holder.  version_out may be NULL.
 * Returns CKPT_NO_CHECKPOINT when the segment exists but no holder has a version.
 * Errors: CKPT_ERR_NAME, CKPT_ERR_NOT_FOUND (no such segment or version), CKPT_ERR_INVALID
 * (range), CKPT_ERR_PERMISSION, CKPT_ERR_CORRUPT, CKPT_ERR_TIMEOUT, CKPT_ERR_UNAVAILABLE. */
int ckpt_read(ckpt_client_t *client, const char *name, const ckpt_version_t *version,
              uint64_t offset, void *buf, uint64_t len, ckpt_version_t *version_out);

/* Deletes the segment everywhere (all holders drop it).  Only the segment's uid or root may.
 * Errors: CKPT_ERR_INVALID, CKPT_ERR_NAME, CKPT_ERR_NOT_FOUND, CKPT_ERR_PERMISSION, CKPT_ERR_BUSY,
 * CKPT_ERR_CONFLICT (ownership changed meanwhile), CKPT_ERR_TIMEOUT, CKPT_ERR_UNAVAILABLE. */
int ckpt_delete(ckpt_client_t *client, const char *name);

/* ---- inspection ------------------------------------------------------------------------------ */

typedef struct ckpt_holder_info {
  uint32_t nodeid;
  char node_name[64];
  ckpt_version_t version; /* newest version this node acknowledged */
  uint8_t live;           /* node is a current member */
  uint8_t is_owner;
  uint8_t is_target;      /* in the current replica set */
} ckpt_holder_info_t;

typedef struct ckpt_segment_info {
  char name[CKPT_MAX_NAME_LEN + 1];
  uint64_t size;
  uint32_t owner_nodeid;  /* 0 = no owner (released) */
  char owner_name[64];
  ckpt_version_t latest;  /* newest committed version known to the cluster */
  uint64_t epoch;         /* ownership epoch: grows with every pull/claim and delete */
  uint32_t replicas;      /* R */
  uint32_t versions_kept;
  uint32_t durability;
  uint32_t compression;   /* enum ckpt_compression */
  uint32_t uid, gid, mode;
  uint32_t acked_replicas;/* replica-set members holding `latest` */
  uint32_t n_holders;
  ckpt_holder_info_t holders[16];
} ckpt_segment_info_t;

/* Errors: CKPT_ERR_NAME, CKPT_ERR_NOT_FOUND, CKPT_ERR_UNAVAILABLE. */
int ckpt_stat(ckpt_client_t *client, const char *name, ckpt_segment_info_t *info);

/* Lists every segment of the cluster; *infos is malloc'd, free with free().
 * Errors: CKPT_ERR_INVALID, CKPT_ERR_NO_MEMORY, CKPT_ERR_UNAVAILABLE. */
int ckpt_list(ckpt_client_t *client, ckpt_segment_info_t **infos, size_t *count);

typedef struct ckpt_version_info {
  ckpt_version_t version;
  uint64_t size;
  uint64_t checksum;
  uint64_t stored_unix_ms;
} ckpt_version_info_t;

/* Versions of the segment this node's store keeps (newest first); *versions is malloc'd.
 * Errors: CKPT_ERR_NAME, CKPT_ERR_NOT_FOUND, CKPT_ERR_UNAVAILABLE. */
int ckpt_versions(ckpt_client_t *client, const char *name, ckpt_version_info_t **versions,
                  size_t *count);

typedef struct ckpt_member_info {
  uint32_t nodeid;
  char node_name[64];
  uint8_t eligible; /* may hold replicas */
  uint8_t is_self;
} ckpt_member_info_t;

typedef struct ckpt_cluster_info {
  uint32_t self_nodeid;
  uint8_t joined;         /* ckptd is a member of the CPG group */
  uint32_t n_members;
  ckpt_member_info_t members[128];
  uint64_t segments;      /* in the catalog */
  uint64_t segments_owned;/* owned by this node */
  uint64_t segments_held; /* versions held in this node's store */
  uint64_t bytes_held;
  uint64_t bytes_sent;    /* segment payload bytes multicast by this ckptd */
  uint64_t bytes_received;/* segment payload bytes stored from peers */
  uint64_t messages_dropped; /* malformed/unknown peer messages dropped */
  uint64_t under_replicated; /* owned segments with fewer than R acknowledged copies */
  uint64_t data_wire_bytes_sent; /* bytes of DATA messages multicast (after compression) */
} ckpt_cluster_info_t;

/* Errors: CKPT_ERR_INVALID, CKPT_ERR_UNAVAILABLE. */
int ckpt_cluster_status(ckpt_client_t *client, ckpt_cluster_info_t *info);

#ifdef __cplusplus
}
#endif
#endif /* CKPT_CKPT_H */
