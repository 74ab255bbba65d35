"""KFP pipeline definitions (`finetune`), the local runner and the client for clusters."""
