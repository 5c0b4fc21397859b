package main

// The "prefork+echo", "prefork+echo+proxy1" and "prefork+echo+proxy2"
// modes are the prefork pool with waiterd's echo on (-echo: after the
// greeting it echoes each line until the client closes its side), the
// last two with the PROXY protocol on as well. Their clients speak
// first: each writes (its PROXY header and) echoLine in one write right
// after connecting, half-closes, and reads to EOF, wanting echoReply.
//
// Plain waiterd greets and closes without reading, so against plain
// prefork a PROXY client adds the server's read as well as the header's
// parse. Here every server reads anyway (the line, then EOF), so
// prefork+echo+proxyN against prefork+echo is what the header itself
// costs.

// echoLine is the request line each echo client sends.
const echoLine = "ping\n"

// echoReply is the whole reply an echo client wants: the greeting, then
// its line back.
const echoReply = greeting + echoLine
