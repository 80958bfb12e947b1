# A mock Puppet master for agent-run tests: a TLS server with a real master
# certificate that logs every connection, TLS handshake (with the SNI name
# the agent asked for) and HTTP request, one JSON object per line.
#
#   ruby tests/puppet/mock_master.rb --listen ADDR:PORT --name NAME \
#        --cert FILE --key FILE --log FILE [--sick-file FILE]
#
# Answers:
#   GET /status/v1/simple     200 "running"   (srvd's https health check)
#   GET /status/v1/simple/ca  404             (a compiler is not a CA)
#   anything else             500 with a Puppet-style JSON error naming NAME,
#                             so an agent run fails right after reaching us.
# While the --sick-file exists, every request gets 503 (a Puppet Server that
# is up but not serving: TCP and TLS work, so an agent would still use it).
# Log events: listening, connect, tls (sni), request (method, path), error.

require 'json'
require 'openssl'
require 'optparse'
require 'socket'

opts = {}
OptionParser.new do |o|
  o.on('--listen ADDR') { |v| opts[:listen] = v }
  o.on('--name NAME') { |v| opts[:name] = v }
  o.on('--cert FILE') { |v| opts[:cert] = v }
  o.on('--key FILE') { |v| opts[:key] = v }
  o.on('--log FILE') { |v| opts[:log] = v }
  o.on('--sick-file FILE') { |v| opts[:sick] = v }
end.parse!
%i[listen name cert key log].each do |k|
  next if opts[k]
  warn "mock_master.rb: --#{k} is required"
  exit 2
end

LOG = File.open(opts[:log], 'a')
LOG.sync = true
LOCK = Mutex.new
NAME = opts[:name]
SICK = opts[:sick]

def log(event, fields = {})
  LOCK.synchronize { LOG.puts(JSON.generate({ 'master' => NAME, 'event' => event }.merge(fields))) }
end

host, _, port = opts[:listen].rpartition(':')
tcp = TCPServer.new(host, Integer(port))

ctx = OpenSSL::SSL::SSLContext.new
ctx.cert = OpenSSL::X509::Certificate.new(File.read(opts[:cert]))
ctx.key = OpenSSL::PKey.read(File.read(opts[:key]))
ctx.min_version = OpenSSL::SSL::TLS1_2_VERSION
ctx.servername_cb = lambda do |(sock, name)|
  Thread.current[:sni] = name
  nil # keep this context
end

# Status answers keep the connection open (as Puppet Server does, so
# srvd's health check holds it and sees a kill at once); the rest close it.
def respond(ssl, status, reason, body, type = 'application/json', keep: false)
  ssl.write("HTTP/1.1 #{status} #{reason}\r\nContent-Type: #{type}\r\n" \
            "Content-Length: #{body.bytesize}\r\nX-Puppet-Version: 7.23.0\r\n" \
            "#{keep ? '' : "Connection: close\r\n"}\r\n#{body}")
  keep
end

def serve(ssl, peer)
  line = ssl.gets("\r\n")
  return false if line.nil?
  method, path, = line.split(' ')
  headers = {}
  while (h = ssl.gets("\r\n")) && h != "\r\n"
    k, v = h.split(':', 2)
    headers[k.downcase] = v.to_s.strip
  end
  len = headers['content-length'].to_i
  ssl.read(len) if len > 0
  log('request', 'method' => method, 'path' => path, 'peer' => peer)
  case path
  when ->(_) { SICK && File.exist?(SICK) }
    respond(ssl, 503, 'Service Unavailable', 'sick', 'text/plain', keep: path.start_with?('/status/'))
  when %r{\A/status/v1/simple/ca\b}
    respond(ssl, 404, 'Not Found', 'not a CA', 'text/plain', keep: true)
  when %r{\A/status/v1/simple\b}
    respond(ssl, 200, 'OK', 'running', 'text/plain', keep: true)
  else
    body = JSON.generate('message' => "mock master #{NAME}: no catalogs here",
                         'issue_kind' => 'RUNTIME_ERROR')
    respond(ssl, 500, 'Internal Server Error', body)
  end
end

log('listening', 'addr' => opts[:listen])
loop do
  sock = tcp.accept
  Thread.new(sock) do |s|
    peer = s.remote_address.inspect_sockaddr
    log('connect', 'peer' => peer)
    ssl = OpenSSL::SSL::SSLSocket.new(s, ctx)
    ssl.sync_close = true
    begin
      ssl.accept
      log('tls', 'sni' => Thread.current[:sni], 'peer' => peer)
      nil while serve(ssl, peer)
    rescue StandardError => e
      log('error', 'error' => "#{e.class}: #{e.message}", 'peer' => peer)
    ensure
      ssl.close rescue nil
    end
  end
end
