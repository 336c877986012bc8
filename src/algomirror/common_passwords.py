"""A small list of passwords people pick most often, plus the obvious decorations of them.

The list is ours (common words, keyboard walks, digit runs); it is not meant to be complete, only to
refuse the passwords that are tried first by anyone guessing. Compared case-insensitively.
"""

from __future__ import annotations

_BASE_WORDS = """
password passw0rd p@ssword p@ssw0rd pass123 passcode password1 mypassword secret secretpassword
qwerty qwertyuiop qwertyui qwerty123 asdfgh asdfghjkl asdfghjkl123 zxcvbnm zxcvbnm123 qazwsx qazwsxedc
1qaz2wsx 1qaz2wsx3edc 1q2w3e4r 1q2w3e4r5t 1q2w3e4r5t6y q1w2e3r4 q1w2e3r4t5y6 azerty azertyuiop
letmein welcome welcome1 admin administrator root toor login guest changeme default test tester
iloveyou iloveyou1 loveyou lovely loveme trustno1 monkey dragon football baseball basketball soccer
hockey cricket sunshine princess shadow master superman batman spiderman starwars pokemon naruto
michael jennifer jessica ashley daniel thomas charlie jordan hunter ranger robert matthew andrew
joshua george harley maggie buster summer winter autumn spring ginger pepper cookie cheese chocolate
freedom whatever nothing computer internet samsung iphone android google facebook instagram twitter
linkedin youtube microsoft windows apple orange banana mustang ferrari porsche mercedes yamaha
killer hello hello123 hellohello goodbye flower flowers butterfly angel angels blessed jesus
heaven family friends forever mother father sister brother money money123 richman success
trading trader stocks nifty banknifty sensex options profit market sharemarket algotrading
openalgo algomirror zerodha kite india bharat mumbai delhi bangalore chennai kolkata hyderabad pune
cricket123 sachin dhoni virat kohli rohit ganesh krishna shiva rama hanuman lakshmi durga
qwertyqwerty passwordpassword adminadmin rootroot testtest letmeinnow changeit changeme123 welcome123
abc123 abcd1234 abcdef abcdefgh abcdefghijkl abc12345 a1b2c3 a1b2c3d4 aaaaaa aaaaaaaaaaaa zzzzzzzzzzzz
dragonball starwars123 masterkey superuser sysadmin manager office company business
"""

_DIGIT_RUNS = """
123456 1234567 12345678 123456789 1234567890 12345678910 123456789012 1234567890123 0123456789
987654321 9876543210 0987654321 111111 1111111111 111111111111 000000 0000000000 000000000000
121212 12121212 123123 123123123 123123123123 112233 11223344 112233445566 147258369 159753
159357 789456123 741852963 123321 654321 666666 777777 888888 999999 696969 101010 202020
11111111 22222222 12341234 123412341234 123451234512345 246810 13579 1357924680
"""

_SUFFIXES = (
    "",
    "1",
    "12",
    "123",
    "1234",
    "12345",
    "123456",
    "!",
    "1!",
    "123!",
    "@123",
    "#1",
    "2020",
    "2021",
    "2022",
    "2023",
    "2024",
    "2025",
    "2026",
    "01",
    "007",
    "69",
    "99",
)


def _build() -> frozenset[str]:
    words = _BASE_WORDS.split()
    digits = _DIGIT_RUNS.split()
    out: set[str] = set(digits)
    for word in words:
        for suffix in _SUFFIXES:
            out.add(word + suffix)
            if len(word) <= 6:
                out.add(word + word[::-1] + suffix)
        out.add(word * 2)
        out.add(word * 3)
    return frozenset(p.lower() for p in out)


COMMON_PASSWORDS: frozenset[str] = _build()


def is_common_password(password: str) -> bool:
    """True when ``password`` (case-insensitively, ignoring surrounding spaces) is on the list."""
    return password.strip().lower() in COMMON_PASSWORDS
