"""The Stellar Consensus Protocol (federated voting, nomination, ballots)."""
