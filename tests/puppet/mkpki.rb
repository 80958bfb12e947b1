# A throw-away Puppet PKI for tests, shaped like what `puppetserver ca`
# produces: an RSA CA, master certificates whose subjectAltName lists every
# name agents may reach them by (the SRV targets: dns_alt_names), and an agent
# certificate laid out in an agent ssldir.
#
#   ruby tests/puppet/mkpki.rb DIR --agent CERTNAME --master NAME[,ALT...]... \
#        [--misnamed NAME=OTHER]...
#
# --misnamed writes NAME's files with a certificate for OTHER only: a master
# whose certificate lacks its SRV target name (a missing dns_alt_names).
#
# Writes:
#   DIR/ca.pem                      the CA certificate (health.ca_file too)
#   DIR/masters/NAME.pem, NAME.key  one pair per --master
#   DIR/ssl/certs/ca.pem            agent ssldir: CA,
#   DIR/ssl/certs/CERTNAME.pem        agent certificate,
#   DIR/ssl/private_keys/CERTNAME.pem agent key,
#   DIR/ssl/crl.pem                   an empty CRL from the CA.

require 'fileutils'
require 'openssl'
require 'optparse'

agent = nil
masters = []
OptionParser.new do |o|
  o.banner = 'usage: mkpki.rb DIR --agent CERTNAME --master NAME[,ALT...]...'
  o.on('--agent NAME') { |v| agent = v }
  o.on('--master NAMES') { |v| masters << v.split(',') }
  o.on('--misnamed NAME=OTHER') { |v| masters << [v.split('=', 2).first, :as, v.split('=', 2).last] }
end.parse!
dir = ARGV.shift
if dir.nil? || agent.nil?
  warn 'usage: mkpki.rb DIR --agent CERTNAME --master NAME[,ALT...]...'
  exit 2
end

$serial = 0
NOW = Time.now

def cert_for(subject_cn, key, issuer_cert, issuer_key, ca:, alt_names: [])
  c = OpenSSL::X509::Certificate.new
  c.version = 2
  c.serial = ($serial += 1)
  c.subject = OpenSSL::X509::Name.new([['CN', subject_cn]])
  c.issuer = issuer_cert ? issuer_cert.subject : c.subject
  c.public_key = key.public_key
  c.not_before = NOW - 3600
  c.not_after = NOW + 24 * 3600
  ef = OpenSSL::X509::ExtensionFactory.new
  ef.subject_certificate = c
  ef.issuer_certificate = issuer_cert || c
  if ca
    c.add_extension(ef.create_extension('basicConstraints', 'CA:TRUE', true))
    c.add_extension(ef.create_extension('keyUsage', 'keyCertSign, cRLSign', true))
  else
    c.add_extension(ef.create_extension('basicConstraints', 'CA:FALSE', true))
    c.add_extension(ef.create_extension('keyUsage', 'digitalSignature, keyEncipherment', true))
    c.add_extension(ef.create_extension('extendedKeyUsage', 'serverAuth, clientAuth', false))
  end
  c.add_extension(ef.create_extension('subjectKeyIdentifier', 'hash', false))
  c.add_extension(ef.create_extension('authorityKeyIdentifier', 'keyid:always', false)) unless ca
  unless alt_names.empty?
    san = alt_names.map { |n| "DNS:#{n}" }.join(', ')
    c.add_extension(ef.create_extension('subjectAltName', san, false))
  end
  c.sign(issuer_key || key, OpenSSL::Digest.new('SHA256'))
  c
end

def write(path, data, mode = 0o644)
  FileUtils.mkdir_p(File.dirname(path))
  File.write(path, data)
  File.chmod(mode, path)
end

ca_key = OpenSSL::PKey::RSA.new(2048)
ca = cert_for('Puppet CA: srvd test', ca_key, nil, nil, ca: true)
write(File.join(dir, 'ca.pem'), ca.to_pem)

masters.each do |names|
  key = OpenSSL::PKey::RSA.new(2048)
  if names[1] == :as
    c = cert_for(names[2], key, ca, ca_key, ca: false, alt_names: [names[2]])
    names = [names.first]
  else
    c = cert_for(names.first, key, ca, ca_key, ca: false, alt_names: names)
  end
  write(File.join(dir, 'masters', "#{names.first}.pem"), c.to_pem)
  write(File.join(dir, 'masters', "#{names.first}.key"), key.to_pem, 0o600)
end

akey = OpenSSL::PKey::RSA.new(2048)
acert = cert_for(agent, akey, ca, ca_key, ca: false, alt_names: [agent])
ssl = File.join(dir, 'ssl')
write(File.join(ssl, 'certs', 'ca.pem'), ca.to_pem)
write(File.join(ssl, 'certs', "#{agent}.pem"), acert.to_pem)
write(File.join(ssl, 'private_keys', "#{agent}.pem"), akey.to_pem, 0o600)

crl = OpenSSL::X509::CRL.new
crl.version = 1
crl.issuer = ca.subject
crl.last_update = NOW - 3600
crl.next_update = NOW + 24 * 3600
ef = OpenSSL::X509::ExtensionFactory.new
ef.issuer_certificate = ca
ef.crl = crl
crl.add_extension(OpenSSL::X509::Extension.new('crlNumber', OpenSSL::ASN1::Integer(1)))
crl.add_extension(ef.create_extension('authorityKeyIdentifier', 'keyid:always', false))
crl.sign(ca_key, OpenSSL::Digest.new('SHA256'))
write(File.join(ssl, 'crl.pem'), crl.to_pem)
