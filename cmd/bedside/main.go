// Command bedside is the Bedside telehealth server and its administration commands.
// Run "bedside help" for the list.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/bedside/bedside/internal/app"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := app.Main(ctx, os.Args[1:], app.IO{Stdin: os.Stdin, Stdout: os.Stdout, Stderr: os.Stderr, Env: os.Environ()})
	stop()
	os.Exit(code)
}
