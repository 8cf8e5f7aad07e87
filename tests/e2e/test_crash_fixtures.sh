# Shared by the crash tests: builds a fake base model and hand-made PEFT
# adapter directories (valid safetensors header, distinct payloads), so the
# store can be exercised without a trainer. Sourced, not run.

# make_model DIR
make_model() {
  mkdir -p "$1"
  printf '{"vocab_size": 259, "edgeloop_tokenizer": "bytes-v1"}' > "$1/config.json"
  printf 'base-model-weights' > "$1/model.safetensors"
}

# make_adapter DIR TAG: a PEFT directory whose bytes depend on TAG
make_adapter() {
  local dir=$1 tag=$2 header='{"__metadata__":{"format":"pt"}}'
  mkdir -p "$dir"
  printf '{"peft_type": "LORA", "r": 8, "tag": %d}' "$tag" > "$dir/adapter_config.json"
  {
    # u64 little-endian header length (< 256 here), header, payload
    printf "\\x$(printf %02x ${#header})\\x00\\x00\\x00\\x00\\x00\\x00\\x00"
    printf '%s' "$header"
    head -c 4096 /dev/zero | tr '\0' "$(printf "\\x$(printf %02x $((65 + tag % 26)))")"
    printf '%08d' "$tag"
  } > "$dir/adapter_model.safetensors"
}

# make_jsonl FILE TAG N: N distinct {"text"} lines
make_jsonl() {
  local i
  : > "$1"
  for ((i = 0; i < $3; i++)); do
    printf '{"text": "sample %s line %d"}\n' "$2" "$i" >> "$1"
  done
}
