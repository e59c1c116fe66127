// Logging for ckptd (and any module that wants it): thin macros over libqb's qb_log, so messages
// reach the configured targets (stderr, syslog, file) and the in-memory blackbox.
// Library modules (store, engine) return Status values; the agent decides what to log.
#pragma once

#include <qb/qblog.h>

#define CKPT_LOG_ERROR(fmt, ...) qb_log(LOG_ERR, fmt __VA_OPT__(, ) __VA_ARGS__)
#define CKPT_LOG_WARN(fmt, ...) qb_log(LOG_WARNING, fmt __VA_OPT__(, ) __VA_ARGS__)
#define CKPT_LOG_NOTICE(fmt, ...) qb_log(LOG_NOTICE, fmt __VA_OPT__(, ) __VA_ARGS__)
#define CKPT_LOG_INFO(fmt, ...) qb_log(LOG_INFO, fmt __VA_OPT__(, ) __VA_ARGS__)
#define CKPT_LOG_DEBUG(fmt, ...) qb_log(LOG_DEBUG, fmt __VA_OPT__(, ) __VA_ARGS__)
#define CKPT_LOG_TRACE(fmt, ...) qb_log(LOG_TRACE, fmt __VA_OPT__(, ) __VA_ARGS__)
