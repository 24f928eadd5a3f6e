# What every task base adds to mmdet's / mmseg's own config (inherited next to it):
# - the import that registers mmvitattn's modules;
# - torch's random state in every checkpoint, so that --resume continues exactly where it stopped;
# - fault handling: SIGTERM / SIGUSR1 save the current iteration and exit with code 75, auto-resume
#   passes over unreadable checkpoints, a dead rank is named, a sample that fails to load is named
#   (bad_samples='skip' skips it), a NaN / Inf loss stops training (nonfinite_loss='skip' skips it);
# - the transformer recipes' paramwise rule: no weight decay on position embeddings, cls tokens,
#   relative-position / attention biases and norms (keys naming no parameter are simply unused).
#   Task bases use it as `paramwise_cfg={{_base_.transformer_paramwise_cfg}}`.
custom_imports = dict(imports=['mmvitattn', 'mmvitattn.models'], allow_failed_imports=False)
custom_hooks = [dict(type='mmvitattn.RNGStateHook'), dict(type='mmvitattn.FaultToleranceHook')]

no_decay = dict(decay_mult=0.0)
transformer_paramwise_cfg = dict(custom_keys={
    'pos_embed': no_decay,
    'cls_token': no_decay,
    'relative_position_bias_table': no_decay,
    'attention_biases': no_decay,
    'norm': no_decay,
})
