"""PII scrubbing for text that may leave the process (review text, questions, prompts to remote servers).

Detectors, not a named-entity model (a model such as Presidio's or scrubadub's name detector needs spaCy
weights downloaded at run time; see docs/privacy.md):

* phone numbers of every region through ``phonenumbers`` (Google's libphonenumber metadata, shipped in
  the wheel), in the national formats of :data:`PHONE_REGIONS` and in international ``+`` form, plus US
  seven-digit local numbers;
* e-mail addresses; payment-card numbers (13–19 digits that pass the Luhn check); IBANs (mod-97 check);
  IPv4 and IPv6 addresses (validated by :mod:`ipaddress`);
* national ids: US SSN, UK National Insurance, French NIR, Indian Aadhaar and PAN, Spanish DNI/NIE (check
  letter), Italian codice fiscale, Canadian SIN (Luhn), and any id announced by its name ("passport",
  "Steuer-ID", "Personalausweis", …);
* postcodes: UK, Canadian, US ZIP after a state code, five-digit codes before a place name, Indian PIN
  codes; street addresses in English, German, French, Italian and Spanish forms;
* person names where the context says it is a name: an introduction ("my name is", "I'm"), a greeting or
  sign-off ("Hi Anna", "thanks, John Smith", "- Tom"), a relation ("my husband Klaus"), a request to
  contact someone, an honorific ("Mrs. Okafor"), or a common given name after "from"/"with"/… or before a
  verb. An honorific that is part of a film or product title ("Mr. Holland's Opus", "Dr. Strangelove",
  "Dr. Bronner's", a quoted title, a title with its year) is kept.

Each match is replaced by a typed placeholder such as ``[EMAIL]`` so that the text still reads naturally
and the model knows something was there. Bare digit runs that nothing marks as PII (item ids, ASINs,
years, prices, epoch seconds) are left alone: facts carry such numbers and must survive unchanged.
Recall and false-positive rate on a labelled probe set are in docs/privacy.md.
"""

from __future__ import annotations

import ipaddress
import re
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import phonenumbers

PHONE_REGIONS: tuple[str, ...] = (
    "US", "GB", "FR", "DE", "IN", "ES", "IT", "NL", "BE", "CH", "AT", "IE", "CA", "AU", "BR", "MX", "JP",
)  # fmt: skip
"""Regions whose national formats (numbers written without ``+``) are recognised; ``+`` numbers of any
region always are."""

# Labels, in the order overlapping matches are resolved: a longer, more specific match wins first.
_PRIORITY = ("EMAIL", "IBAN", "CARD", "IP", "ID", "PHONE", "POSTCODE", "ADDRESS", "NAME")

_EMAIL = re.compile(r"\b[\w.+-]+@[\w-]+(?:\.[\w-]+)+\b")
_IBAN = re.compile(r"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,3})?\b")
_CARD = re.compile(r"(?<![\w-])(?:\d[ -]?){12,18}\d(?![\w-])")
_IPV4 = re.compile(r"(?<![\w.])(?:(?:25[0-5]|2[0-4]\d|1?\d?\d)\.){3}(?:25[0-5]|2[0-4]\d|1?\d?\d)(?![\w.])")
_IPV6 = re.compile(
    r"(?<![\w:.])(?:[0-9A-Fa-f]{0,4}:){2,7}(?:[0-9A-Fa-f]{1,4}|(?:\d{1,3}\.){3}\d{1,3})?(?![\w:])"
)

# A phone number must look like one: a leading +, separated digit groups, or a word that announces it.
# A bare run of digits is an item id, an ISBN or an epoch far more often than a phone.
_PHONE_CUE = re.compile(
    r"(?i:\b(?:phone|tel|telephone|mobile|cell|handy|portable|call|ring|text|whatsapp|fax|number|no|"
    r"nummer|numéro|num|appel\w*|ll[aá]ma\w*|chiama\w*)\b\W{0,4}(?:\w+\W{1,3}){0,2})$"
)
_NOT_PHONE_CUE = re.compile(
    r"(?i:\b(?:isbn(?:-1[03])?|issn|ean|upc|gtin|sku|asin|order|invoice|model|item|part|ref|serial)\W{0,4}|#)$"
)
# German area code and number around a slash ("040 / 123456"), which libphonenumber does not read.
_SLASHED = re.compile(r"(?<![\w/.])0\d{2,4} ?/ ?\d{4,8}(?![\w/.])")
_DATE = re.compile(r"\d{1,4}([./-])\d{1,2}\1\d{2,4}")
_US_LOCAL = re.compile(r"(?<![\w.,/-])[2-9]\d{2}[-. ]\d{4}(?![\w/-]|[.,]\d)")
_US_LOCAL_CUE = re.compile(r"(?i:\b(?:phone|call|cell|text|dial|number|tel)\b[\w\s:.']{0,12})$")

_SSN = re.compile(r"(?<![\w-])(?!000|666|9\d\d)\d{3}-(?!00)\d{2}-(?!0000)\d{4}(?![\w-])")
# Compact NINOs follow HMRC's prefix rules; spaced ones also take the "QQ" prefix of HMRC's examples.
_NINO = re.compile(r"\b(?:[A-CEGHJ-PR-TW-Z][A-CEGHJ-NPR-TW-Z]\d{6}[A-D]|[A-Z]{2} \d{2} \d{2} \d{2} [A-D])\b")
_NIR = re.compile(
    r"(?<![\w-])[12] \d{2} (?:0[1-9]|1[0-2]|[2-9]\d) (?:\d{2}|2[AB]) \d{3} \d{3}(?: \d{2})?(?![\w-])"
)
_AADHAAR = re.compile(r"(?<![\w-])(?<!\d )[2-9]\d{3} \d{4} \d{4}(?![\w-])(?! \d)")
_PAN = re.compile(r"\b[A-Z]{3}[ABCFGHJLPT][A-Z]\d{4}[A-Z]\b")
_DNI = re.compile(r"\b(?:\d{8}|[XYZ]\d{7})-?[A-Z]\b")
_CODICE_FISCALE = re.compile(r"\b[A-Z]{6}\d{2}[A-EHLMPR-T]\d{2}[A-Z]\d{3}[A-Z]\b")
_SIN = re.compile(r"(?<![\w-])\d{3}[ -]\d{3}[ -]\d{3}(?![\w-])")
_ID_CUE = re.compile(
    r"(?i:\b(?:ssn|social security(?: number| no\.?)?|national insurance(?: number| no\.?)?|ni number|nino|"
    r"passport(?: number| no\.?)?|aadhaa?r(?: number| no\.?)?|pan(?: card| number)?|tax id|tin|"
    r"steuer-?id|steuernummer|steueridentifikationsnummer|personalausweis(?:nummer)?|ausweisnummer|"
    r"id card(?: number| no\.?)?|identity card(?: number)?|national id(?: number)?|"
    r"driver'?s licen[cs]e(?: number| no\.?)?|num[ée]ro de s[ée]curit[ée] sociale|nir|dni|nie|bsn|"
    r"codice fiscale|sin|social insurance number))"
    r"\s*(?:(?:is|number|no\.?|nr\.?|#|:|=)\s*)*"
    r"(?P<id>(?=[A-Z0-9-]*\d)[A-Z0-9][A-Z0-9-]{4,}(?: (?=[A-Z0-9]*\d)[A-Z0-9]{1,4})*)\b"
)

_US_STATES = (
    "AL|AK|AZ|AR|CA|CO|CT|DE|DC|FL|GA|HI|ID|IL|IN|IA|KS|KY|LA|ME|MD|MA|MI|MN|MS|MO|MT|NE|NV|NH|NJ|NM|NY|"
    "NC|ND|OH|OK|OR|PA|RI|SC|SD|TN|TX|UT|VT|VA|WA|WV|WI|WY"
)
_PLACE = r"[A-ZÀ-ÝÄÖÜ][a-zà-ÿäöüß]+(?:[- ][A-ZÀ-ÝÄÖÜ][a-zà-ÿäöüß]+)?"
_POSTCODES = (
    # UK: outward code, space, inward code ("SW1A 1AA", "M1 1AE").
    re.compile(r"\b(?P<code>(?:[A-PR-UWYZ][A-HK-Y]?\d[A-Z\d]?) ?\d[ABD-HJLNP-UW-Z]{2})\b"),
    # Canada: "K1A 0B1".
    re.compile(r"\b(?P<code>[ABCEGHJ-NPRSTVXY]\d[A-Z] ?\d[A-Z]\d)\b"),
    # US ZIP after a state code: "CA 90210", "IL 62704-1234".
    re.compile(rf"\b(?:{_US_STATES}),? (?P<code>\d{{5}}(?:-\d{{4}})?)\b"),
    # Five-digit codes (DE, FR, ES, IT) before a place name, after a comma, "in", "au", … or a country letter.
    re.compile(
        rf"(?:(?:^|[,\n]|\b(?:in|to|au|à|nach|an|en|a|im)) ?|\b[DF]-)(?P<code>\d{{5}}) (?={_PLACE}\b)"
    ),
    # India: a PIN code after a place name or the word PIN.
    re.compile(r"(?:\b(?i:pin(?: ?code)?)\W{0,3}|\b[A-Z][a-z]+ ?-? ?)(?P<code>[1-9]\d{5})\b(?!\.\d)"),
)

_STREET_WORDS = (
    r"street|st|avenue|ave|road|rd|boulevard|blvd|lane|ln|drive|court|ct|way|place|pl|terrace|close|"
    r"crescent|square|sq|highway|hwy|parkway|pkwy"
)
_NAME_WORD = r"[A-ZÀ-ÝÄÖÜ][\wäöüßà-ÿ'’.-]*"
_ADDRESSES = (
    # "221B Baker Street", "12 Oak Lane apt 4": a number, capitalised words, a street word.
    re.compile(
        rf"(?<![\w.,])\d{{1,5}}[a-zA-Z]?\s+(?P<addr>(?:{_NAME_WORD}\s+){{1,3}}(?i:{_STREET_WORDS})\b\.?"
        r"(?:,?\s*(?i:apt|suite|unit|flat)\.?\s*\w+)?)"
    ),
    # "Hauptstraße 5", "Goethestr. 12a", "Via Roma 12", "Calle Mayor 5".
    re.compile(
        r"(?P<addr>\b[A-ZÄÖÜ][\wäöüß-]*(?:straße|strasse|str\.|weg|gasse|allee|platz|ring|damm|ufer)"
        r"\s*\d{1,4}\s?[a-z]?)\b"
    ),
    re.compile(
        rf"(?P<addr>\b(?:Via|Viale|Piazza|Corso|Calle|Avenida|Plaza|Carrer|Paseo)\s+(?:{_NAME_WORD}\s+){{1,3}}"
        r"\d{1,4}[a-z]?)\b"
    ),
    # "12 rue de la Paix", "5 avenue Victor Hugo".
    re.compile(
        r"(?<![\w.,])\d{1,4}(?: ?(?:bis|ter))?,? (?P<addr>(?i:rue|avenue|av\.|boulevard|bd|place|allée|"
        r"chemin|impasse|quai|cours|route) (?:(?:de|du|des|la|le|l'|d')\s?)*"
        rf"{_NAME_WORD}(?: {_NAME_WORD}){{0,3}})"
    ),
)

# ------------------------------------------------------------------------------------------------ names
_NAME = r"(?P<name>[A-ZÀ-ÝÄÖÜ][a-zà-ÿäöüß'’]+(?:-[A-ZÀ-Ý][a-zà-ÿ']+)?(?: [A-ZÀ-ÝÄÖÜ][a-zà-ÿäöüß'’]+(?:-[A-ZÀ-Ý][a-zà-ÿ']+)?)?)"
# Capitalised words that follow a name cue but are not names ("Hi everyone", "Thanks Amazon", "I'm Not").
_NOT_NAMES = frozenset(
    """all everyone everybody anyone there team guys folks friends ladies gentlemen sir madam mom mum dad
    mother father grandma grandpa god santa amazon target walmart ebay etsy sephora ulta boots costco
    netflix apple google customer customers support service services seller sellers store shop company
    brand the a an this that it its i my we our you your he she they not very so so-so also just still
    really always never glad happy sorry sure new old in on at by for with from to and or but if all
    american british english french german indian canadian spanish italian european asian african
    kitty mexican chinese japanese korean australian irish scottish welsh dutch swiss catholic christian
    jewish muslim vegan vegetarian monday tuesday wednesday thursday friday saturday sunday january
    february march april june july august september october november december christmas easter
    thanksgiving valentine black white red blue green pink gold silver love thanks thank hello hi hey
    dear cheers regards best warmly yours sincerely kind bye xoxo xo ok okay yes no please professor professore doctor madame monsieur signore señor merci danke
    gracias grazie hallo bonjour salut ciao one two three five ten great good nice lovely""".split()  # noqa: SIM905 (a word list reads better as words)
)
# Common given names (several countries): a name after a weak cue ("from Peter") or before a verb must
# be one of these, since "from Amazon" and "with Sabrina (1995)" share the shape.
_GIVEN_NAMES = frozenset(
    """aaron adam adrian ahmed aisha alex alexander alice alicia amanda amelia amit amy ana andrea andreas
    andrew angela anita anja ann anna anne annika anthony antoine anya arjun ashley barbara ben benjamin
    bernd beth betty bob brian bruno camille carlos carol caroline catherine charlotte chloe chris
    christian christina christine claire clara claude daniel david deepak deborah denise diana diego
    dieter divya dominik donna dorothy edward elena elif elizabeth ella emily emma eric erik eva fatima
    felix fernando florian francesca francesco frank franz gabriel george giulia giuseppe greta hannah
    hans harry heather heinz helen helga hugo ian ingrid isabel isabella ishaan jack jacob james jan jane
    janet jason jean jennifer jens jessica jo joan johanna john jonas jorge jose josé joseph josh joshua
    juan julia julian julie jürgen karen karin kate katharina katie kavya kevin kim klaus kumar lara laura
    lea leon linda lisa louis louise luca lucas lucy luis lukas maria marie mario mark markus martin mary
    matthew max maximilian megan mehmet melanie michael michelle mike mohammed monika nadia nancy natalie
    neha nicholas nicole nina noah olivia oliver pablo pamela patrick paul paula peter petra philipp pierre
    pooja priya rachel rahul raj rajesh ravi rebecca richard robert rohan ruth ryan sabine sam samantha
    sandra sara sarah sebastian sergio simon simone sofia sophia sophie stefan stephanie steve steven
    susan sven thomas tim tobias tom tyler ursula valentina vikram william wolfgang yusuf zoe""".split()  # noqa: SIM905 (a word list reads better as words)
)
_STRONG_CUE = re.compile(
    r"(?P<lead>(?:(?i:\bmy name is|\bmy name's|\bi am called|\bcall me|\bsigned,?|\bi'm|\bi’m|\bi am|"
    r"\bcontact|\bask for|\bspoke (?:to|with)|\btalk(?:ed)? (?:to|with)|"
    r"\bmy (?:husband|wife|son|daughter|friend|sister|brother|mom|mum|dad|mother|father|boyfriend|"
    r"girlfriend|partner|neighbou?r|boss|colleague|co-?worker|roommate|aunt|uncle|niece|nephew|cousin|"
    r"grandson|granddaughter|kid|baby|fiancée?|stylist|dermatologist))\s+|\bnamed\s+)"
    # A greeting opens a sentence; only these take a name without a comma ("Love Bug" is a film).
    r"|(?:^|(?<=[.!?\n]\s)|(?<=[.!?\n]))\s*(?:Hi|Hello|Hey|Dear|Thanks|Thank you|Hallo|Bonjour)(?:,\s*|\s+)"
    r"|(?i:\b(?:thanks|thank you|cheers|regards|best wishes|best|love|kisses|hugs|bisous|merci|danke|"
    r"grüße|gruß|gracias|grazie|saluti|cordialement|xoxo|xo|xx),\s*))" + _NAME
)
_WEAK_CUE = re.compile(
    r"(?P<lead>(?i:\b(?:from|with|by|to|and|for|told|asked|gave|met|ask|tell|thanks))\s+)" + _NAME
)
_VERB_AFTER = re.compile(
    r"(?:^|(?<=[.!?\n]\s))" + _NAME + r"(?= (?:loved|loves|liked|likes|said|says|bought|buys|gave|gives|"
    r"told|asked|wanted|wants|thinks|thought|recommended|uses|used|hated|hates|got|gets)\b)"
)
_SIGNATURE = re.compile(r"(?P<lead>(?:^|\n)\s*(?:-|--|—|~)\s*)" + _NAME + r"\s*$")
_TITLED = re.compile(r"(?P<lead>\b(?:Mr|Mrs|Ms|Miss|Dr|Prof)\.?\s+)" + _NAME)
# Fictional characters and brands that carry an honorific (ML-100k titles, Amazon Beauty brands).
_TITLED_NOT_NAMES = frozenset(
    """strangelove doubtfire magoo moreau dalloway winterbourne muir wrong right wonderful bean hyde
    jekyll dolittle no freeze deeds potato robot nobody pibb clean seuss pepper evil frankenstein zhivago
    bronner bronner's scholl scholl's teal teal's dennis brandt hauschka jart+ jart""".split()  # noqa: SIM905 (a word list reads better as words)
)
# A year in parentheses after the name, across other parentheses: "Mrs. Brown (Her Majesty, Mrs. Brown) (1997)".
_YEAR_AFTER = re.compile(r"(?:[^.!?\n(),]|\([^()\n]*\)|\))*?\((?:18|19|20)\d\d\)")
_TITLE_CONTINUES = re.compile(
    r"(?:'s|’s) [A-Z]|,? (?:and|or|of|to|the|in|on|at)(?: the)?:? [A-Z](?!r\.|rs\.|s\.)|:"
)


@dataclass(frozen=True)
class ScrubResult:
    text: str
    found: dict[str, int] = field(default_factory=dict)
    """How many of each kind of PII was replaced, e.g. ``{"EMAIL": 1}``."""


Span = tuple[int, int, str]


def _luhn(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch)
        if i % 2 == 1:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def _iban_valid(text: str) -> bool:
    """ISO 13616 mod-97 check."""
    compact = text.replace(" ", "")
    if not 15 <= len(compact) <= 34:
        return False
    moved = compact[4:] + compact[:4]
    return int("".join(str(int(ch, 36)) for ch in moved)) % 97 == 1


def _dni_valid(text: str) -> bool:
    compact = text.replace("-", "")
    digits = "XYZ".index(compact[0]).__str__() + compact[1:-1] if compact[0] in "XYZ" else compact[:-1]
    return "TRWAGMYFPDXBNJZSQVHLCKE"[int(digits) % 23] == compact[-1]


def _spans(pattern: re.Pattern[str], text: str, label: str, group: str | int = 0) -> Iterator[Span]:
    for m in pattern.finditer(text):
        yield m.start(group), m.end(group), label


def _checked(
    pattern: re.Pattern[str], text: str, label: str, check: Callable[[str], bool], group: str | int = 0
) -> Iterator[Span]:
    for m in pattern.finditer(text):
        if check(m.group(group)):
            yield m.start(group), m.end(group), label


def _ip_spans(text: str) -> Iterator[Span]:
    yield from _spans(_IPV4, text, "IP")
    for m in _IPV6.finditer(text):
        try:
            ipaddress.IPv6Address(m.group(0))
        except ValueError:
            continue
        yield m.start(), m.end(), "IP"


def _phone_spans(text: str) -> Iterator[Span]:
    if sum(ch.isdigit() for ch in text) < 7:
        return
    seen: set[tuple[int, int]] = set()
    for region in PHONE_REGIONS:
        for match in phonenumbers.PhoneNumberMatcher(text, region, leniency=phonenumbers.Leniency.VALID):
            span = (match.start, match.end)
            if span in seen:
                continue
            seen.add(span)
            raw = match.raw_string
            # Nationally written numbers have 8+ digits; shorter separated groups are ranges and body
            # measurements ("130-135 lbs", "34 24 35"), and "/" or "#" mark sizes and references.
            national_ok = sum(ch.isdigit() for ch in raw) >= 8 and not re.search(r"[/#]", raw)
            if not raw.startswith("+") and not national_ok:
                continue
            separated = raw.startswith("+") or bool(re.search(r"\d[\s().-]+\d", raw)) or raw.startswith("(")
            before = text[max(0, match.start - 40) : match.start]
            if _NOT_PHONE_CUE.search(before) or _DATE.fullmatch(raw):
                continue
            if separated or _PHONE_CUE.search(before):
                yield match.start, match.end, "PHONE"
    yield from _spans(_SLASHED, text, "PHONE")
    for m in _US_LOCAL.finditer(text):
        if "-" in m.group(0) or _US_LOCAL_CUE.search(text[max(0, m.start() - 30) : m.start()]):
            yield m.start(), m.end(), "PHONE"


def _id_spans(text: str) -> Iterator[Span]:
    yield from _spans(_ID_CUE, text, "ID", "id")
    yield from _spans(_SSN, text, "ID")
    yield from _spans(_NINO, text, "ID")
    yield from _spans(_NIR, text, "ID")
    yield from _spans(_AADHAAR, text, "ID")
    yield from _spans(_PAN, text, "ID")
    yield from _checked(_DNI, text, "ID", _dni_valid)
    yield from _spans(_CODICE_FISCALE, text, "ID")
    yield from _checked(_SIN, text, "ID", lambda s: _luhn(re.sub(r"\D", "", s)))


def _is_title(text: str, start: int, end: int) -> bool:
    """Whether the honorific name at ``text[start:end]`` belongs to a film or product title."""
    if _quoted(text, start):
        return True
    before = text[text.rfind("\n", 0, start) + 1 : start]
    after = text[end:]
    if _YEAR_AFTER.match(after) or _TITLE_CONTINUES.match(after):
        return True
    # "Island of Dr. Moreau", "Ghost and Mrs. Muir": a capitalised word and "of"/"and" before the title.
    return bool(re.search(r"[A-Z]\w* (?:of|and|&) (?:Mr|Mrs|Ms|Miss|Dr|Prof)\.? $", before))


def _name_spans(text: str) -> Iterator[Span]:
    def words(name: str) -> list[str]:
        return name.split()

    def trim(m: re.Match[str]) -> tuple[int, int] | None:
        """The name's span without trailing words that are not names; None when the first word is not one."""
        parts = words(m.group("name"))
        if parts[0].lower().strip("'’") in _NOT_NAMES:
            return None
        start = m.start("name")
        if len(parts) == 2 and parts[1].lower() in _NOT_NAMES:
            return start, start + len(parts[0])
        return start, m.end("name")

    for pattern in (_STRONG_CUE, _SIGNATURE):
        for m in pattern.finditer(text):
            span = trim(m)
            if span:
                yield span[0], span[1], "NAME"
    for pattern in (_WEAK_CUE, _VERB_AFTER):
        for m in pattern.finditer(text):
            # "Looking for Richard", "Jack and Sarah": a weak cue inside a title-case run is a title.
            title_case = re.search(r"\b(?!I\b)[A-Z][\w'’]* $", text[max(0, m.start() - 30) : m.start()])
            if words(m.group("name"))[0].lower() in _GIVEN_NAMES and not (
                pattern is _WEAK_CUE and title_case
            ):
                span = trim(m)
                if span:
                    yield span[0], span[1], "NAME"
    for m in _TITLED.finditer(text):
        first = words(m.group("name"))[0]
        possessive_title = re.match(r"\w+['’]s$", first) and re.match(
            r" [A-Z]", text[m.start("name") + len(first) :]
        )
        if (
            possessive_title
            or first.lower() in _TITLED_NOT_NAMES
            or _is_title(text, m.start(), m.end("name"))
        ):
            continue
        # "Mr. Smith Goes to Washington": only the first word is taken when the second starts a title.
        end = m.end("name") if not _is_title(text, m.start(), m.start("name") + len(first)) else None
        if end is None:
            continue
        yield m.start("name"), end, "NAME"


def _quoted(text: str, start: int) -> bool:
    """Whether ``start`` lies inside a quoted span of its line, as facts write item titles."""
    before = text[text.rfind("\n", 0, start) + 1 : start]
    return before.count('"') % 2 == 1 or before.count("“") > before.count("”")


def _detect(text: str) -> list[Span]:
    spans: list[Span] = []
    spans += _spans(_EMAIL, text, "EMAIL")
    spans += _checked(_IBAN, text, "IBAN", _iban_valid)
    spans += _checked(
        _CARD, text, "CARD", lambda s: 13 <= len(re.sub(r"\D", "", s)) <= 19 and _luhn(re.sub(r"\D", "", s))
    )
    spans += _ip_spans(text)
    spans += _id_spans(text)
    spans += _phone_spans(text)
    for pattern in _POSTCODES:
        spans += _spans(pattern, text, "POSTCODE", "code")
    for pattern in _ADDRESSES:
        spans += _spans(pattern, text, "ADDRESS", "addr")
    spans += (span for span in _name_spans(text) if not _quoted(text, span[0]))
    # Resolve overlaps: by label priority, then the longer match; a placed span blocks any overlapping one.
    spans.sort(key=lambda s: (_PRIORITY.index(s[2]), -(s[1] - s[0]), s[0]))
    placed: list[Span] = []
    for span in spans:
        if span[1] > span[0] and all(span[1] <= p[0] or span[0] >= p[1] for p in placed):
            placed.append(span)
    return sorted(placed)


def scrub_pii(text: str) -> ScrubResult:
    """``text`` with e-mails, phones, card numbers, IBANs, IP addresses, national ids, postcodes, street
    addresses and person names replaced by ``[EMAIL]``, ``[PHONE]``, ``[CARD]``, ``[IBAN]``, ``[IP]``,
    ``[ID]``, ``[POSTCODE]``, ``[ADDRESS]``, ``[NAME]``; ``found`` counts the replacements."""
    found: Counter[str] = Counter()
    pieces: list[str] = []
    cursor = 0
    for start, end, label in _detect(text):
        pieces += [text[cursor:start], f"[{label}]"]
        found[label] += 1
        cursor = end
    pieces.append(text[cursor:])
    return ScrubResult("".join(pieces), dict(found))
