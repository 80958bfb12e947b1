# Prints the order in which the real Puppet agent would try masters, using
# Puppet's own SRV code (Puppet::HTTP::DNS#each_srv_record: priorities,
# weighted random choice, fallback to _x-puppet), resolving through the DNS
# server given on the command line with Ruby's own resolver (plain UDP, no
# EDNS, TCP retry on TC) -- exactly what an agent does, minus the connects.
#
#   ruby tests/puppet/srv_order.rb --nameserver 127.0.0.1:5353 [--repeat N] \
#        DOMAIN:SERVICE...
#
# SERVICE is a Puppet HTTP service name: puppet, ca, report or file
# (`file` is what Puppet asks for as _x-puppet-fileserver).
#
# Prints one JSON object per line for each DOMAIN:SERVICE:
#   {"domain":..., "service":...,
#    "queries":[{"name":..., "records":[{"priority","weight","port","target","ttl"}]}],
#    "orders":[[["host",port],...], ...]   # one order per repeat
#    "tcp": true|false}                    # did the resolver retry over TCP
# Exit 2 on usage errors.

require 'json'
require 'optparse'
require 'resolv'
require 'puppet'
require 'puppet/http'

nameserver = nil
repeat = 1
OptionParser.new do |o|
  o.banner = 'usage: srv_order.rb --nameserver HOST:PORT [--repeat N] DOMAIN:SERVICE...'
  o.on('--nameserver ADDR') { |v| nameserver = v }
  o.on('--repeat N', Integer) { |v| repeat = v }
end.parse!

if nameserver.nil? || ARGV.empty?
  warn 'usage: srv_order.rb --nameserver HOST:PORT [--repeat N] DOMAIN:SERVICE...'
  exit 2
end
host, _, port = nameserver.rpartition(':')
host = host.delete_prefix('[').delete_suffix(']')

# Observation only: note when Ruby's resolver falls back to TCP after TC.
# The decision itself stays Resolv's own (Resolv::DNS#fetch_resource).
module TcpSpy
  def make_tcp_requester(*args)
    $srv_order_tcp = true
    super
  end
end
Resolv::DNS.prepend(TcpSpy)

# Records every query Puppet makes and what it got back; delegates to a real
# Resolv::DNS so Puppet sees exactly what the resolver returns.
class RecordingResolver
  attr_reader :queries

  def initialize(dns)
    @dns = dns
    @queries = []
  end

  def getresources(name, typeclass)
    recs = @dns.getresources(name, typeclass)
    @queries << {
      'name' => name,
      'records' => recs.map do |r|
        { 'priority' => r.priority, 'weight' => r.weight, 'port' => r.port,
          'target' => r.target.to_s, 'ttl' => r.ttl }
      end
    }
    recs
  end
end

ARGV.each do |arg|
  domain, _, service = arg.rpartition(':')
  if domain.empty? || !%w[puppet ca report file].include?(service)
    warn "bad DOMAIN:SERVICE #{arg.inspect} (services: puppet, ca, report, file)"
    exit 2
  end
  $srv_order_tcp = false
  queries = nil
  orders = []
  repeat.times do
    # A fresh resolver and a fresh Puppet::HTTP::DNS per repeat, as in a new
    # agent run: no cached answers, a new weighted random choice.
    dns = Resolv::DNS.new(nameserver_port: [[host, Integer(port)]], search: [], ndots: 1)
    dns.timeouts = [2, 2]
    rec = RecordingResolver.new(dns)
    order = []
    Puppet::HTTP::DNS.new(rec).each_srv_record(domain, service.to_sym) do |target, p|
      order << [target, p]
    end
    dns.close
    queries ||= rec.queries
    orders << order
  end
  puts JSON.generate('domain' => domain, 'service' => service, 'queries' => queries,
                     'orders' => orders, 'tcp' => $srv_order_tcp)
end
