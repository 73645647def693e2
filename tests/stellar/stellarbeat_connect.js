// An independent crawler's view of one node: stellarbeat's js-stellar-node-connector
// dials HOST PORT, completes the overlay handshake, asks GET_SCP_STATE(0), verifies each
// envelope's signature with its own code, asks for the quorum set each envelope names,
// and prints one JSON line of what it saw.  Run with NODE_PATH pointing at the
// node_modules folder that holds the connector (make stellar-tools).
// With FOLLOW=N it goes on listening after the quorum set until it has seen envelopes
// of N slots past the first slot it saw (a node followed as it decides).
'use strict';
const { xdr, hash, StrKey } = require('@stellar/stellar-base');
const connector = require('@stellarbeat/js-stellar-node-connector');

const [host, port] = [process.argv[2], Number(process.argv[3])];
const config = connector.getConfigFromEnv();
const node = connector.createNode(config, require('pino')({ level: 'silent' }));
const networkId = hash(Buffer.from(config.network));
const result = { connected: false, peer: null, envelopes: 0, verified: 0, quorumSets: [], slots: [] };
const follow = Number(process.env.FOLLOW || 0);
let firstSlot = null;
const asked = new Set();

function finish(code) {
	process.stdout.write(JSON.stringify(result) + '\n');
	process.exit(code);
}

setTimeout(() => finish(2), 20000);
const connection = node.connectTo(host, port);
connection.on('connect', (publicKey) => {
	result.connected = true;
	result.peer = publicKey;
	connection.sendStellarMessage(xdr.StellarMessage.getScpState(0));
});
connection.on('data', (work) => {
	const message = work.stellarMessage;
	const kind = message.switch().name;
	if (kind === 'scpMessage') {
		const envelope = message.envelope();
		result.envelopes += 1;
		const verdict = connector.verifySCPEnvelopeSignature(envelope, networkId);
		if (verdict.isOk() && verdict.value) result.verified += 1;
		const slot = Number(envelope.statement().slotIndex().toString());
		if (!result.slots.includes(slot)) result.slots.push(slot);
		if (firstSlot === null) firstSlot = slot;
		if (follow && result.quorumSets.length && slot >= firstSlot + follow) finish(0);
		const pledges = envelope.statement().pledges();
		const body = pledges.value();
		const qsetHash =
			pledges.switch().name === 'scpStExternalize'
				? body.commitQuorumSetHash()
				: body.quorumSetHash();
		const key = qsetHash.toString('hex');
		if (!asked.has(key)) {
			asked.add(key);
			connection.sendStellarMessage(xdr.StellarMessage.getScpQuorumset(qsetHash));
		}
	} else if (kind === 'scpQuorumset') {
		const qset = message.qSet();
		const digest = hash(qset.toXDR()).toString('hex');
		const dto = connector.getQuorumSetFromMessage(qset);
		result.quorumSets.push({ hash: digest, asked: asked.has(digest), quorumSet: dto.isOk() ? dto.value : null });
		if (!follow) finish(0);
	}
	work.done();
});
connection.on('error', (error) => {
	result.error = String(error);
	finish(1);
});
connection.on('close', () => finish(result.quorumSets.length ? 0 : 1));
