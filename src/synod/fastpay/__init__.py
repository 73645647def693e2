"""FastPay: settlement by Byzantine consistent broadcast."""
