DaskParityDecisions = parity_decisions = None
