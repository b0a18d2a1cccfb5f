"""The text token ids every part of ITIT agrees on: T5's conventions, so a T5 tokenizer and a
T5 encoder drop in unchanged."""

PAD_ID = 0  # padding after the EOS
BOS_ID = PAD_ID  # the text decoder's first input: T5's decoder_start_token_id is the pad id
EOS_ID = 1
