"""Test-wide set-up."""

import signal

# A shell that starts a job in the background without job control (`nohup bash .ci/run &`, some
# CI runners) makes it ignore SIGINT, and every child process inherits the ignore. The Ctrl-C
# tests need the usual behaviour, a KeyboardInterrupt, in this process and in the children it
# starts (a handler, unlike an ignore, is reset to the default in a child at exec).
if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)
