"""Chat templates the kit supplies: the tiny Qwen2.5-VL's and Pixtral's (for checkpoints that lack one)."""

# Qwen2.5-VL's chat template, without the default system turn (short sequences for a tiny model).
QWEN_TINY_CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' or 'image' in content %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif content['type'] == 'text' %}{{ content['text'] }}{% endif %}"
    "{% endfor %}{% endif %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

# Pixtral's conversation format ([INST] user [/INST] answer</s>, mistral_common's layout): images first,
# then the text, whatever the chunk order; a text chunk's words under "text" (the kit's rows, TRL) or
# "content" (older mistral-community/pixtral-12b templates read only that); string or list contents.
PIXTRAL_CHAT_TEMPLATE = (
    "{%- set ns = namespace(system='') %}{{- bos_token }}"
    "{%- for message in messages %}"
    "{%- if message['content'] is string %}{%- set chunks = [{'type': 'text', 'text': message['content']}] %}"
    "{%- else %}{%- set chunks = message['content'] %}{%- endif %}"
    "{%- if message['role'] == 'system' %}"
    "{%- for c in chunks if c['type'] == 'text' %}{%- set ns.system = ns.system + (c['text'] if 'text' in c "
    "else c['content']) + '\n\n' %}{%- endfor %}"
    "{%- elif message['role'] == 'user' %}{{- '[INST]' }}"
    "{%- for c in chunks if c['type'] == 'image' or 'image' in c %}{{- '[IMG]' }}{%- endfor %}"
    "{{- ns.system }}{%- set ns.system = '' %}"
    "{%- for c in chunks if c['type'] == 'text' %}{{- c['text'] if 'text' in c else c['content'] }}{%- endfor %}"
    "{{- '[/INST]' }}"
    "{%- elif message['role'] == 'assistant' %}"
    "{%- for c in chunks if c['type'] == 'text' %}{{- c['text'] if 'text' in c else c['content'] }}{%- endfor %}"
    "{{- eos_token }}"
    "{%- else %}{{- raise_exception('Pixtral chat: roles are system, user and assistant') }}{%- endif %}"
    "{%- endfor %}"
)
