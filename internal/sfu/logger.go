package sfu

import (
	"context"
	"fmt"
	"log/slog"

	"github.com/pion/logging"
)

// pionLogger routes pion's logs into slog, quieter than pion: its errors are our warnings
// (a client going away makes many), its warnings our debug lines, the rest dropped.
func pionLogger(log *slog.Logger) logging.LoggerFactory { return pionLogs{log} }

type pionLogs struct{ log *slog.Logger }

func (f pionLogs) NewLogger(scope string) logging.LeveledLogger {
	return pionLog{f.log.With("pion", scope)}
}

type pionLog struct{ log *slog.Logger }

func (l pionLog) emit(level slog.Level, msg string) {
	if l.log.Enabled(context.Background(), level) {
		l.log.Log(context.Background(), level, msg)
	}
}

func (pionLog) Trace(string)          {}
func (pionLog) Tracef(string, ...any) {}
func (pionLog) Debug(string)          {}
func (pionLog) Debugf(string, ...any) {}
func (pionLog) Info(string)           {}
func (pionLog) Infof(string, ...any)  {}
func (l pionLog) Warn(msg string)     { l.emit(slog.LevelDebug, msg) }
func (l pionLog) Warnf(format string, args ...any) {
	l.emit(slog.LevelDebug, fmt.Sprintf(format, args...))
}
func (l pionLog) Error(msg string) { l.emit(slog.LevelWarn, msg) }
func (l pionLog) Errorf(format string, args ...any) {
	l.emit(slog.LevelWarn, fmt.Sprintf(format, args...))
}
