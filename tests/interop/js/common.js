'use strict'
// Shared bits of the interop scripts: flag parsing, a Link on a grape, JSON output, loopback binding.
const { parseArgs } = require('node:util')
const Link = require('grenache-nodejs-link')

function flags (options) {
  const { values } = parseArgs({ options, strict: true, allowPositionals: false })
  for (const [name, opt] of Object.entries(options)) {
    if (opt.required && values[name] === undefined) fail(`missing --${name}`)
  }
  return values
}

function fail (message) {
  process.stderr.write(message + '\n')
  process.exit(2)
}

function startLink (grape) {
  const link = new Link({ grape, requestTimeout: 5000 })
  link.start()
  return link
}

function print (obj) {
  process.stdout.write(JSON.stringify(obj) + '\n')
}

// Make a grenache-nodejs-http transport listen on 127.0.0.1 only (its listen(port) binds all interfaces).
function bindLoopback (transport, host = '127.0.0.1') {
  const getSocket = transport.getSocket.bind(transport)
  transport.getSocket = (secure) => {
    const socket = getSocket(secure)
    const listen = socket.listen.bind(socket)
    socket.listen = (port, ...rest) => listen(port, host, ...rest)
    return socket
  }
  return transport
}

module.exports = { flags, fail, startLink, print, bindLoopback }
