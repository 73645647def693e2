// The other direction: stellarbeat's js-stellar-node-connector listens on 127.0.0.1 and
// a synod node dials it.  Prints {"listening": port, "id": G...} once it listens, then
// {"connected": true, "peer": G...} when a handshake completes, and asks the peer for
// its SCP state so the dialer sees an authenticated request arrive.
'use strict';
const { xdr } = require('@stellar/stellar-base');
const connector = require('@stellarbeat/js-stellar-node-connector');

const config = connector.getConfigFromEnv();
const node = connector.createNode(config, require('pino')({ level: 'silent' }));
setTimeout(() => process.exit(2), 20000);
node.on('listening', () => {
	const port = node.server.address().port;
	process.stdout.write(JSON.stringify({ listening: port, id: node.keyPair.publicKey() }) + '\n');
});
node.on('connection', (connection) => {
	connection.on('connect', (publicKey) => {
		process.stdout.write(JSON.stringify({ connected: true, peer: publicKey }) + '\n');
		connection.sendStellarMessage(xdr.StellarMessage.getScpState(0));
	});
	connection.on('error', () => {});
});
node.acceptIncomingConnections(0, '127.0.0.1');
