#include <ckpt/ckpt.h>

extern "C" const char* ckpt_strerror(int status) {
  switch (status) {
    case CKPT_OK: return "success";
    case CKPT_NO_CHECKPOINT: return "no checkpoint exists (start fresh)";
    case CKPT_ERR_INVALID: return "invalid argument";
    case CKPT_ERR_NAME: return "invalid segment name";
    case CKPT_ERR_NOT_FOUND: return "no such segment or version";
    case CKPT_ERR_EXISTS: return "segment exists with different parameters";
    case CKPT_ERR_PERMISSION: return "permission denied";
    case CKPT_ERR_TOO_LARGE: return "size above the configured limit";
    case CKPT_ERR_NO_SPACE: return "no space (configured total limit or disk full)";
    case CKPT_ERR_FENCED: return "fenced: another node owns the segment now";
    case CKPT_ERR_CONFLICT: return "conflict: a concurrent operation on another node won";
    case CKPT_ERR_TIMEOUT: return "timed out";
    case CKPT_ERR_UNAVAILABLE: return "ckptd is not reachable or not in the cluster";
    case CKPT_ERR_NOT_OWNER: return "segment is owned by another node (pull it first)";
    case CKPT_ERR_REPLICAS: return "not enough eligible nodes for the replica count";
    case CKPT_ERR_CORRUPT: return "stored data failed its checksum";
    case CKPT_ERR_IO: return "I/O error";
    case CKPT_ERR_PROTOCOL: return "protocol error between libckpt and ckptd";
    case CKPT_ERR_NO_MEMORY: return "out of memory";
    case CKPT_ERR_BUSY: return "segment is open by another writer";
    case CKPT_ERR_INTERNAL: return "internal error";
    default: return "unknown ckpt status";
  }
}
