package pool_test

import (
	"io"

	"github.com/sirupsen/logrus"

	"github.com/waiter-go/waiter/config"
	"github.com/waiter-go/waiter/hooks"
	"github.com/waiter-go/waiter/pool"
)

func newServerNoProcess(o config.Options) *pool.Server {
	s := pool.New(o, hooks.Set{})
	s.Logger = logrus.New()
	s.Logger.Out = io.Discard
	return s
}
