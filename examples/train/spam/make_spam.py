"""Write spam.csv: ~600 SMS messages labelled spam or ham, the same file every run (seeded, no network).

Spam and ham come from varied templates with random fillers (names, places, prices, numbers, links, times). Some
ham borrows spam's vocabulary ("free", "win", "call", "prize") and some spam avoids it, so a keyword rule is not
enough and the classifier has to learn more than one word.

Usage: python examples/train/spam/make_spam.py [OUT.csv]   (default: spam.csv beside this script)
"""

from __future__ import annotations

import csv
import random
import sys
from pathlib import Path

NAMES = ["Sam", "Priya", "Tom", "Aisha", "Lena", "Marco", "Jo", "Kenji", "Ruth", "Omar", "Dad", "Mum", "Nina"]
PLACES = ["the station", "Tesco", "the gym", "Costa", "uni", "the library", "work", "the pub", "Gran's", "the park"]
TIMES = ["7", "half 6", "8.30", "noon", "after lunch", "tonight", "tomorrow", "Friday", "in 10 mins", "later"]
FOODS = ["pizza", "curry", "pasta", "tacos", "sushi", "a roast", "chips", "noodles"]
THINGS = ["charger", "keys", "umbrella", "book", "jacket", "wallet", "headphones", "notes"]
PRIZES = ["£1000 cash", "a £500 Tesco voucher", "an iPhone 15", "a holiday to Tenerife", "£2,000", "a Samsung TV"]
BRANDS = ["Vodafone", "O2", "EE", "Three", "Royal Mail", "HMRC", "Amazon", "your bank", "DPD", "NatWest"]
DOMAINS = ["bit.ly/3xQz", "win-now.co", "claim-uk.net", "tinyurl.com/pr1ze", "gift-centre.info", "txt-win.com"]

HAM = [
    "Hey {name}, are we still on for {food} {time}?",
    "I'm at {place}, where are you?",
    "Can you pick up my {thing} from {place} on your way back?",
    "Running late, be there {time}. Sorry!",
    "Did you see the match last night? Unreal",
    "Ok cool, see you at {place} {time}",
    "Thanks for today {name}, had a really good time x",
    "Mum says dinner is {food} at {time}, don't be late",
    "Left my {thing} at yours I think, can you check?",
    "Happy birthday {name}!! Hope you have an amazing day",
    "What time does {place} close on {time}?",
    "Just got home. Long day. Talk tomorrow?",
    "Can you call me when you're free? Nothing urgent",
    "Free {time}? Fancy {food}?",
    "We won the quiz at {place}!! {name} knew the last answer",
    "Lol no, the prize was a mug. Still counts",
    "Your {thing} is on the kitchen table",
    "Meeting moved to {time}, same room",
    "Is {name} coming {time} or not?",
    "Can I borrow £{small}? Will pay you back {time}",
    "Train delayed again, {small} mins apparently",
    "Text me when you get to {place}",
    "Got the tickets! Row {small}, seats together",
    "Don't forget Gran's birthday card, it's {time}",
    "That's fine, I'll sort it out {time}",
    "Call you back in {small} mins, in a meeting",
    "Did you ever claim that refund from {brand}? Mine took {small} days",
    "Won £{small} on the scratch card lol, drinks on me {time}",
    "Here's the link for {time}: {place} booking is under {name}",
    "Urgent: can you ring me back? Locked out again",
    "{brand} finally delivered my {thing}, only {small} days late",
    "Congrats on the new job {name}!! So proud of you",
]
SPAM = [
    "URGENT! You have won {prize}. To claim call 09{phone} now. T&Cs apply 18+",
    "Congratulations! You've been selected to receive {prize}. Reply YES to claim",
    "FREE entry into our weekly draw to win {prize}! Text WIN to {short} now",
    "{brand}: your parcel could not be delivered. Reschedule at {link}",
    "{brand}: we noticed unusual activity on your account. Verify now at {link}",
    "You are owed a tax refund of £{money}. Claim before {time} at {link}",
    "Your mobile number has won {prize} in our prize draw! Call 09{phone} to claim. £1.50/min",
    "Final notice: your {brand} bill payment failed. Update your details at {link} to avoid suspension",
    "Hot singles in your area want to meet you! Reply DATE to {short}. £3/msg",
    "Get a loan of up to £{money} today, no credit checks! Reply LOAN or visit {link}",
    "Last chance! {prize} is waiting for you. Claim code {code} at {link}",
    "You have 1 new voicemail. Listen at {link}",
    "Dear customer, your {brand} account will be closed {time}. Confirm your identity: {link}",
    "Exclusive offer: 50% off all bundles this week only. Text STOP to opt out {short}",
    "Hi, this is the delivery team. A fee of £{small}.99 is due for your package: {link}",
    "Someone tried to log into your account. If this wasn't you secure it here {link}",
    "Claim your FREE ringtone now! Text TONE to {short}. Sub £4.50/wk until STOP",
    "We've been trying to reach you about your car's extended warranty. Call 0800{phone}",
    "Mum, I lost my phone, this is my new number. Can you send £{money}? I'll explain later",
    "Your entry to win {prize} is confirmed, reply with your bank details to receive it",
    "Hey it's {name}, we met at {place}? Text me back on 07{phone} x",
    "Are you still looking for work? Earn £{money} a week from home, message me for details",
    "Hi {name}, your order #{phone} is ready. Track it here {link}",
]


def fill(template: str, rng: random.Random) -> str:
    return template.format(
        name=rng.choice(NAMES),
        place=rng.choice(PLACES),
        time=rng.choice(TIMES),
        food=rng.choice(FOODS),
        thing=rng.choice(THINGS),
        prize=rng.choice(PRIZES),
        brand=rng.choice(BRANDS),
        link=rng.choice(DOMAINS),
        phone=rng.randint(1_000_000, 9_999_999),
        short=rng.randint(60_000, 89_999),
        code=f"{rng.choice('ABCDEFGHJKLMNPQRSTUVWXYZ')}{rng.randint(100, 999)}",
        money=rng.choice([250, 480, 750, 1200, 3000, 5000]),
        small=rng.randint(2, 40),
    )


def messages(n: int = 600, spam_share: float = 0.4, seed: int = 13) -> list[tuple[str, str]]:
    """`n` distinct (text, label) pairs (about half spam: ham templates have fewer variants, so more ham draws
    repeat and are dropped). Distinct, so no message is both learned from and tested on."""
    rng = random.Random(seed)
    rows: dict[str, str] = {}
    while len(rows) < n:
        label = "spam" if rng.random() < spam_share else "ham"
        rows.setdefault(fill(rng.choice(SPAM if label == "spam" else HAM), rng), label)
    pairs = list(rows.items())
    rng.shuffle(pairs)
    return pairs


def main() -> None:
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).with_name("spam.csv")
    with out.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["text", "label"])
        writer.writerows(messages())
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
