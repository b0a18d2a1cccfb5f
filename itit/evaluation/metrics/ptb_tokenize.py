"""A pure-Python stand-in for pycocoevalcap's PTB tokenization, for machines without Java.

pycocoevalcap runs Stanford CoreNLP 3.4.1's PTBTokenizer (`-preserveLines -lowerCase`) through
Java, then drops the tokens in its PUNCTUATIONS list. `simple_ptb_tokenize` reproduces that
caption by caption, Unicode included (quotes, dashes, ellipses, currency, fractions, invisible
characters: the tables below follow the tokenizer's lexer grammar, checked against the Java
program character by character); tests/test_cider.py compares the two token for token.
"""
from __future__ import annotations

import functools
import re

from pycocoevalcap.tokenizer.ptbtokenizer import PUNCTUATIONS

_PUNCTUATIONS = frozenset(PUNCTUATIONS)
# Stanford's tokenizer keeps the period of these, of dotted acronyms ("u.s.") and of single letters.
_ABBREVIATIONS = frozenset(
    ('mr.', 'mrs.', 'ms.', 'dr.', 'st.', 'jr.', 'sr.', 'vs.', 'etc.', 'mt.', 'ave.', 'no.', 'co.',
     'inc.', 'ltd.', 'jan.', 'feb.', 'mar.', 'apr.', 'aug.', 'sept.', 'oct.', 'nov.', 'dec.'))
_ACRONYM = re.compile(r'(?:[a-zA-Z]\.)+')
# A single letter loses it before one of these capitalised words, and at the end of a caption too:
# there pycocoevalcap's batch goes on with the next caption, which mostly starts with "A" or "The".
_LETTER_PERIOD = re.compile(
    r'(?:(?<![\w.])|(?<=\.\.\.))([a-zA-Z])\.(?=\s*$|\s+(?:%s)(?:\s|$))' % '|'.join(
        f'{word[0]}(?i:{re.escape(word[1:])})' for word in (
            'About According Additionally After An A As At But Earlier He Her Here However If In '
            'It Last Many More Mr. Ms. Now Once One Other Our She Since So Some Such That The '
            'Their Then There These They This We When While What Yet You').split()))
_BRACKETS = {'(': '-lrb-', ')': '-rrb-', '[': '-lsb-', ']': '-rsb-', '{': '-lcb-', '}': '-rcb-'}
# Stanford splits these fused words in two ("cannot" -> "can not").
_SPLIT_WORDS = {'cannot': 'can not', 'gonna': 'gon na', 'wanna': 'wan na', 'gotta': 'got ta',
                'lemme': 'lem me', 'gimme': 'gim me'}
_BRACKET_NAMES = frozenset(_BRACKETS.values())
# Leading characters split off a word, trailing ones likewise (runs such as "..." or "!!!" stay one
# token, as in Stanford's tokenizer). Quotes and apostrophes are split off by `_split_quote`.
_LEADING = re.compile(r'^(\.\.\.|--+|[-$#]|[!?]+|\.(?!\d))')
_TRAILING = re.compile(r'(\.\.\.|--+|[!?]+|[-.,;:%])$')

# Quotes and apostrophes (after `_UNICODE_MAP`): ' ` ‘ ’ ‚ ‛ “ ” „ ‟ ‹ › « ». Stanford writes a
# quote token in LaTeX style (‘ -> `, ’ -> ', “ -> ``, ” -> ''), which pycocoevalcap drops; it keeps
# ‚ „ ‟ as they are.
_QUOTES = "'`\u2018\u2019\u201a\u201b\u201c\u201d\u201e\u201f\u2039\u203a\xab\xbb"
_ANY_QUOTE = re.compile(f'[{_QUOTES}]')
_TRAILING_QUOTES = re.compile(f'[{_QUOTES}]+$')
_LATEX_QUOTES = str.maketrans({'‘': '`', '‛': '`', '‹': '`', '’': "'", '›': "'", '“': '``',
                               '«': '``', '”': "''", '»': "''"})
_APOS = "['’]"  # an apostrophe that starts a clitic ("dog’s")
_APOS_ETC = "['’‘‛`]"  # any apostrophe inside a word ("o‘clock", "don‘t")
_LETTER = r'(?:[^\W\d_]|[\u0300-\u036f])'
_ALNUM = r'(?:[^\W_]|[\u0300-\u036f])'
_CLITIC = rf'{_APOS}(?:ll|re|ve|s|m|d)'
_CLITIC_ONLY = re.compile(rf'{_CLITIC}|n{_APOS_ETC}t', re.I)
_YEAR = re.compile(rf'{_APOS}\d\d')  # "’99", when a space follows (see `_year_apostrophe`)
_YEAR_START = re.compile(rf'{_APOS}(?=\d\d)')
_SPACE_OR_NEWLINE = frozenset(' \t\xa0\u3000\r\n\x0b\x0c\x85\u2028\u2029').union(
    map(chr, range(0x2000, 0x200b)))
# Words Stanford keeps whole although they hold an apostrophe (its APOWORD rule; the character
# classes there are case-sensitive, the literals are not).
_APOWORD = re.compile(
    rf"{_APOS}[nN]{_APOS}?|[lLdDjJ]{_APOS}|(?i:dunkin|somethin|ol){_APOS}"
    rf"|{_APOS}(?i:em|till?|cause)|{_APOS}[2-9]0[sS]|[A-HJ-XZn]{_APOS_ETC}{_LETTER}{{2,}}"
    rf"|{_LETTER}+[aeiouyAEIOUY]{_APOS_ETC}[aeiouA-Z]{_LETTER}*|[oO]{_APOS_ETC}[oO]"
    r"|(?i:cont'd\.|nor'easter|c'mon|e'er|s'mores|ev'ry|li'l|nat'l)")
# The rules Stanford's lexer tries at the start of a word with an apostrophe inside, in its order
# (the longest match wins, ties go to the earlier rule, and a lookahead counts towards the length):
# each pattern's first group is the token. A word before a clitic ("dog" of "dog’s"); a word before
# n't ("do" of "don’t"); an APOWORD; "y’" before a letter ("y’all"); n't before a non-letter; a
# number ("1,000"); an acronym ("u.s."); and letters and digits joined by hyphens, each part perhaps
# after "o’", "d’" or "l’" ("o’clock").
_PART = rf'(?:[dDoOlL]{_APOS_ETC}{_ALNUM})?{_ALNUM}+'
_FIRST_TOKEN = tuple(re.compile(pattern) for pattern in (
    rf'({_LETTER}{_ALNUM}*(?:[.!?]{_LETTER}{_ALNUM}*)*)(?i:{_CLITIC})',
    rf'([a-zA-Z]*[a-mo-zA-MO-Z])[nN]{_APOS_ETC}[tT]',
    f'({_APOWORD.pattern})',
    rf'([yY]{_APOS}){_LETTER}',
    rf'([nN]{_APOS_ETC}[tT])(?:[^a-zA-Z]|$)',
    r'([-+]?\d*(?:[.:,]\d+)+|[-+]?\d+)',
    r'((?:[a-zA-Z]\.)+)',
    rf'({_PART}(?:[-_\u2010\u2011\u058a]{_PART})*)'))

# Unicode, as Stanford's lexer (PTBLexer.flex, CoreNLP 3.4.1) treats it; the tables were checked
# against the Java tokenizer on every character of the Basic Multilingual Plane. Characters outside
# it (emoji, 𝐀) reach the lexer as UTF-16 surrogates, which it deletes.
_UNICODE_MAP = {
    # Windows-1252 characters decoded as Latin-1 control codes.
    '\x80': ' $ ', '\x85': ' ', '\x91': '‘', '\x92': '’', '\x93': '“', '\x94': '”', '\x96': ' ',
    '\x97': ' ',
    '\xad': '',  # soft hyphen: removed inside a word, a dropped "-" on its own
    # Dashes become "--" and ellipses "...", both dropped by pycocoevalcap.
    '–': ' ', '—': ' ', '―': ' ', '…': ' ',
    '€': ' $ ', '₠': ' $ ', '¤': ' $ ', '£': ' # ', '¢': ' cents ',
    '¼': ' 1/4 ', '½': ' 1/2 ', '¾': ' 3/4 ', '⅓': ' 1/3 ', '⅔': ' 2/3 ',
}
# Letters besides Python's (mostly combining marks), from PTBLexer.flex's LETTER.
_LETTER_EXTRAS = re.compile(
    '[\u0237-\u024f\u02c2-\u02c5\u02d2-\u02df\u02e5-\u02ff\u0300-\u036f\u0370-\u037d\u0384\u0385'
    '\u03cf\u03f6\u03fc-\u03ff\u0483-\u0487\u04cf\u04f6-\u04ff\u0510-\u0525\u055a-\u055f'
    '\u0591-\u05bd\u05bf\u05c1\u05c2\u05c4\u05c5\u05c7\u0615-\u061a\u063b-\u063f\u064b-\u065e'
    '\u0670\u06d6-\u06ef\u06fa-\u06ff\u070f\u0711\u0730-\u074f\u0750-\u077f\u07a6-\u07b1'
    '\u07c0-\u07f5\u07fa\u0900-\u0903\u093c\u093e-\u094e\u0951-\u0955\u0962\u0963\u0981-\u0983'
    '\u09bc-\u09c4\u09c7\u09c8\u09cb-\u09cd\u09d7\u09e2\u09e3\u0a01-\u0a03\u0a3c\u0a3e-\u0a4f'
    '\u0a81-\u0a83\u0abc-\u0acf\u0b82\u0bbe-\u0bc2\u0bc6-\u0bc8\u0bca-\u0bcd\u0c01-\u0c03'
    '\u0c3e-\u0c56\u0d3e-\u0d44\u0d46-\u0d48\u0e30-\u0e3a\u0e47-\u0e4e\u0eb1-\u0ebc\u0ec8-\u0ecd]')
# Symbols that are always a token of their own (MISCSYMBOL, currencies, other fractions, ¡ ¿ and
# CJK punctuation); every other non-letter is deleted by the lexer or is a space.
_SYMBOLS = re.compile(
    '[\xa5\xa6\xa7\xa8\xa9\xac\xae\xaf\xb0-\xba\xd7\xf7\xa1\xbf\u037e\u0387\u0589\u05be\u05c0'
    '\u05c3\u05c6\u05f3\u05f4\u0600-\u0603\u0606-\u060c\u0614\u061b\u061e\u061f\u066a\u066d'
    '\u06d4\u0700-\u070d\u07f6-\u07f8\u0964\u0965\u0e3f\u0e4f\u1fbd\u2016\u2017\u2020-\u2023'
    '\u2030-\u2038\u203b\u203e-\u2042\u2044\u207a-\u207f\u208a-\u208e\u20a4\u2100-\u214f'
    '\u2155-\u215e\u2190-\u21ff\u2200-\u2bff\u3001\u3002\u3012\u30fb\uff01-\uff0f\uff1a-\uff20'
    '\uff3b-\uff40\uff5b-\uff65\uffe0\uffe1\uffe5\uffe6]')
# Runs the lexer keeps as one token (superscript and subscript numbers: "⁻³"), and any other
# non-ASCII character, for `_unicode_token`.
_UNICODE_TOKEN = re.compile(
    '(?P<run>[\u207a\u207b\u208a\u208b]?(?:[\u2070\xb9\xb2\xb3\u2074-\u2079]+|[\u2080-\u2089]+))'
    '|(?P<char>[^\x00-\x7f])')
# Fractions ("1/2", "1 1/2", "1⁄2") are one token, a space in them made non-breaking; until the
# caption is split into tokens, \x00 stands for that space and \x01 for the fraction slash ⁄, which
# later steps would split on. The lexer deletes control characters, \x00 and \x01 among them.
_FRACTION = re.compile(r'(?<![\w.,:/\\-])(?:\d{1,4}[ \xa0])?\d{1,4}(?:\\?/|\u2044)\d{1,4}')
_FRACTION_MARKS = str.maketrans({' ': '\x00', '\xa0': '\x00', '\u2044': '\x01'})
_UNMARK = str.maketrans({'\x00': '\xa0', '\x01': '\u2044'})
_CONTROL = re.compile('[\x00-\x08\x0e-\x1f\x7f]')


@functools.lru_cache(maxsize=4096)
def _unicode_char(char):
  """What the lexer makes of one non-ASCII character, as text for the ASCII rules after it."""
  if char in _UNICODE_MAP:
    return _UNICODE_MAP[char]
  if ord(char) > 0xffff:
    return ' '
  if char in _QUOTES or char.isalpha() or char.isdecimal() or _LETTER_EXTRAS.match(char):
    return char
  return f' {char} ' if _SYMBOLS.match(char) else ' '


def _unicode_token(match):
  if match.group('run'):
    return f' {match.group("run")} '
  char, text, start = match.group('char'), match.string, match.start()
  if char in '\u2010\u2011\u058a':  # hyphens stay only between letters or digits ("x‐ray")
    joins = 0 < start < len(text) - 1 and all(
        c.isalpha() or c.isdecimal() for c in (text[start - 1], text[start + 1]))
    return char if joins else ' '
  return _unicode_char(char)


def _quote_size(word):
  """1 or 2: Stanford reads '' or two curly (or `) quotes as one token."""
  if len(word) < 2 or word[1] not in _QUOTES:
    return 1
  return 2 if (word[0] == "'") == (word[1] == "'") else 1


def _split_quote(word):
  """Splits off the token Stanford reads first in `word`, which starts with a quote character.

  Returns (token, rest). Before a bare quote, Stanford takes "'t" of "'tis" and "'twas", words such
  as "’em" or "’90s", a clitic before a non-letter ("’s."), and, after ’ only, a clitic before
  anything ("’dog" -> "'d og", a quirk of its lexer).
  """
  if re.match(r"'(?i:t(?:is|was))", word):
    return word[:2], word[2:]
  apoword = _APOWORD.match(word)
  # For ASCII ' a rule matching ' plus a letter and one more character (3) wins shorter matches.
  ascii_quote = word[0] == "'" and len(word) > 2 and word[1].isascii() and word[1].isalpha()
  if apoword and word[0] in "'’" and (word[0] == '’' or not ascii_quote or apoword.end() >= 3):
    return apoword.group(0), word[apoword.end():]
  clitic = re.match(f'(?i:{_CLITIC})' + ('' if word[0] == '’' else '(?![a-zA-Z])'), word)
  if clitic:
    return clitic.group(0).translate(_LATEX_QUOTES), word[clitic.end():]
  size = _quote_size(word)
  return word[:size].translate(_LATEX_QUOTES), word[size:]


def _year_apostrophe(match):
  """Keeps "’99" one token only before a space or line break, as Stanford's lexer does."""
  after = match.string[match.end() + 2:match.end() + 3]
  if not after or after in _SPACE_OR_NEWLINE or after.isalpha() or after.isdecimal():
    return match.group(0)
  return match.group(0) + ' '


def _whole(word):
  """Whether Stanford keeps `word` as one token (its trailing period or apostrophe included)."""
  if word.lower() in _ABBREVIATIONS or _ACRONYM.fullmatch(word):
    return True
  return bool(_ANY_QUOTE.search(word) and (
      _APOWORD.fullmatch(word) or _CLITIC_ONLY.fullmatch(word) or _YEAR.fullmatch(word)))


def _split_middle(word):
  """Splits what is left of a word once its leading and trailing punctuation is off."""
  if word.lower() in _SPLIT_WORDS:
    return _SPLIT_WORDS[word.lower()].split()
  if not _ANY_QUOTE.search(word):
    return [word] if word else []
  if _whole(word):
    return [word.translate(_LATEX_QUOTES) if _CLITIC_ONLY.fullmatch(word) else word]
  # Longest match first, the earlier rule on ties (max keeps the first of equal keys).
  matches = [m for m in (pattern.match(word) for pattern in _FIRST_TOKEN) if m]
  if not matches:
    quote = next(i for i, char in enumerate(word) if char in _QUOTES)
    return [word[:quote]] + _split_word(word[quote:])
  first = max(matches, key=lambda m: m.end()).group(1)
  token = first.translate(_LATEX_QUOTES) if _CLITIC_ONLY.fullmatch(first) else first
  return [token] + _split_word(word[len(first):])


def _split_word(word):
  """Splits one whitespace-free chunk the way Stanford's PTBTokenizer does on caption text."""
  if word in _BRACKET_NAMES:
    return [word]
  if word.isalnum():  # most words: nothing to split off
    return _SPLIT_WORDS.get(word.lower(), word).split()
  leading = []
  while word and not _whole(word):
    if word[0] in _QUOTES:
      token, word = _split_quote(word)
      leading.append(token)
      continue
    if word[0] in '\u2010\u2011\u058a':  # a hyphen left joining nothing ("we’ll‐known"): deleted
      word = word[1:]
      continue
    match = _LEADING.match(word)
    if not match or match.end() == len(word):
      break
    leading.append(match.group(0))
    word = word[match.end():]
  trailing = []
  while word and not _whole(word):
    quotes = _TRAILING_QUOTES.search(word)
    # Quotes after a word with an apostrophe inside are left to `_split_middle`, which reads left to
    # right as the lexer does ("rock’n’" -> "rock ’n’").
    if quotes and quotes.start() > 0 and not _ANY_QUOTE.search(word[:quotes.start()]):
      trailing[:0] = _split_word(quotes.group(0))
      word = word[:quotes.start()]
      continue
    match = _TRAILING.search(word)
    if not match or match.start() == 0:
      break
    trailing.insert(0, match.group(0))
    word = word[:match.start()]
  middle = _split_middle(word)
  # A period stripped above belongs to the last piece if that is an abbreviation ("S‘t." ->
  # "s ` t.").
  if len(middle) > 1 and trailing[:1] == ['.'] and _whole(middle[-1] + '.'):
    middle[-1] += trailing.pop(0)
  return leading + middle + trailing


def simple_ptb_tokenize(caption: str) -> str:
  """Pure-Python stand-in for pycocoevalcap's PTB tokenization of one caption.

  Mimics Stanford PTBTokenizer with `-lowerCase -preserveLines` followed by pycocoevalcap's
  punctuation removal: lowercases; splits off sentence punctuation, quotes, `$ # %`, leading and
  trailing hyphens, clitics ("woman's" -> "woman 's", "doesn't" -> "does n't", "can't" ->
  "ca n't") and "cannot"/"gonna"/"wanna"/"gotta"; brackets become "-lrb-", "-rsb-", ... (kept, as
  pycocoevalcap only removes the upper-case forms); then drops the tokens pycocoevalcap removes
  (. , ? ! : ; - -- ... and the quote tokens). Numbers ("3.5", "1,000", "5:30"), hyphenated words,
  dotted acronyms ("u.s.") and common abbreviations ("mr.", "st.") stay whole.

  Non-ASCII text is treated as Stanford's lexer treats it: curly quotes and apostrophes act as
  ASCII ones do ("dog’s" -> "dog 's", “ ” ‘ ’ « » ‹ › dropped, but „ ‚ ‟ kept), dashes – — ― and
  the ellipsis … are dropped, € £ ¢ become "$", "#", "cents" and ½ "1/2"; accented and other
  letters stay in words ("café"); symbols (° × © ™ → ¥ ¡ ¿ and the like) are tokens of their own;
  other characters (emoji, zero-width and non-breaking spaces, control codes) separate words.

  Where it can differ from Stanford's tokenizer: rare abbreviations outside the short list above,
  URLs and e-mail addresses, emoticons, phone numbers, punctuation glued inside a word
  ("dog,cat"), a soft hyphen at the start of a word or next to an apostrophe or period, letters
  added to Unicode after version 6 (Stanford deletes them), and a one-letter abbreviation ending a
  caption (Stanford looks at the next one); on COCO captions such cases are rare, but scores from
  the two tokenizers are not interchangeable.
  """
  text = _YEAR_START.sub(_year_apostrophe, caption.replace('\n', ' '))
  text = _LETTER_PERIOD.sub(r'\1 .', text)
  text = _CONTROL.sub(' ', text)
  text = _FRACTION.sub(lambda match: match.group(0).translate(_FRACTION_MARKS), text)
  if not text.isascii():
    text = _UNICODE_TOKEN.sub(_unicode_token, text)
  for bracket, name in _BRACKETS.items():
    text = text.replace(bracket, f' {name} ')
  # Stanford splits every semicolon and every comma or colon that does not start or continue a
  # number ("1,000", "5:30", ",5").
  text = text.replace(';', ' ; ')
  text = re.sub(r'([,:])(?!\d)', r' \1 ', text)
  text = re.sub(r'(?<!\d)([,:])', r' \1', text)
  # Stanford turns double quotes into `` and '', which pycocoevalcap removes.
  text = text.replace('"', ' ')
  # Stanford lowercases each token after splitting (its rules see the original case).
  tokens = [t.lower().translate(_UNMARK) for word in text.split() for t in _split_word(word)]
  return ' '.join(t for t in tokens if t not in _PUNCTUATIONS)
