"""Generates the SQLite demonstration: a shop database and question/answer tasks whose answers come from SQL
queries, for the `mcp` suite on mcp-server-sqlite. Deterministic (seed 0). Usage: mcp_sqlite_tasks.py OUT_DIR"""
import json
import random
import sqlite3
import sys
from pathlib import Path

out = Path(sys.argv[1])
out.mkdir(parents=True, exist_ok=True)
rng = random.Random(0)

colors = ["red", "blue", "green", "black", "white", "yellow", "grey", "orange", "pink", "brown"]
things = {"lamp": "home", "chair": "home", "table": "home", "kettle": "kitchen", "mug": "kitchen", "pan": "kitchen",
          "scarf": "clothing", "hat": "clothing", "jacket": "clothing", "pen": "office", "stapler": "office", "notebook": "office"}
products = []
for c in colors:
    for t, cat in things.items():
        if rng.random() < 0.55:
            products.append((f"{c} {t}", cat, round(rng.uniform(2, 120), 2), rng.randint(0, 90)))
first = ["Ada", "Ben", "Cleo", "Dan", "Eva", "Finn", "Gus", "Hana", "Ivo", "Jade", "Kai", "Lea", "Max", "Nora", "Otto",
         "Pia", "Quin", "Rosa", "Sam", "Tara", "Uma", "Vik", "Wren", "Yara", "Zeno"]
last = ["Moss", "Hale", "Reed", "Stone", "Vale", "Frost", "Lund", "Park"]
cities = ["Lyon", "Porto", "Graz", "Ghent", "Turku", "Bergen", "Cork", "Brno"]
customers = []
for f in first:
    for l in rng.sample(last, 3):
        customers.append((f"{f} {l}", rng.choice(cities), rng.randint(2015, 2025)))
orders = []
for i in range(400):
    orders.append((i + 1, rng.choice(customers)[0], rng.choice(products)[0], rng.randint(1, 5)))

db = out / "shop.db"
db.unlink(missing_ok=True)
con = sqlite3.connect(db)
con.execute("CREATE TABLE products (name TEXT PRIMARY KEY, category TEXT, price REAL, stock INTEGER)")
con.execute("CREATE TABLE customers (name TEXT PRIMARY KEY, city TEXT, joined_year INTEGER)")
con.execute("CREATE TABLE orders (id INTEGER PRIMARY KEY, customer TEXT, product TEXT, quantity INTEGER)")
con.executemany("INSERT INTO products VALUES (?, ?, ?, ?)", products)
con.executemany("INSERT INTO customers VALUES (?, ?, ?)", customers)
con.executemany("INSERT INTO orders VALUES (?, ?, ?, ?)", orders)
con.commit()

def one(sql, *args):
    return con.execute(sql, args).fetchone()[0]

def num(x):
    return str(int(x)) if float(x).is_integer() else str(x)

tasks = []
for name, cat, price, stock in products:
    tasks.append((1, f"What is the price of the product '{name}'?", num(price), "number"))
    tasks.append((1, f"How many units of '{name}' are in stock?", num(stock), "number"))
for name, city, year in customers:
    tasks.append((1, f"In which city does the customer {name} live?", city, "exact"))
    total = one("SELECT COALESCE(SUM(quantity), 0) FROM orders WHERE customer = ?", name)
    tasks.append((2, f"How many items in total has {name} ordered (the sum of quantities over all their orders)?", num(total), "number"))
for city in cities:
    tasks.append((1, f"How many customers live in {city}?", num(one("SELECT COUNT(*) FROM customers WHERE city = ?", city)), "number"))
for cat in sorted(set(things.values())):
    tasks.append((1, f"How many products are in the category '{cat}'?", num(one("SELECT COUNT(*) FROM products WHERE category = ?", cat)), "number"))
rng.shuffle(tasks)

tools = ["read_query", "list_tables", "describe_table"]
split_of = lambda i: "test" if i < 60 else ("dev" if i < 90 else "train")
files = {s: open(out / f"shop.{s}.jsonl", "w") for s in ("train", "dev", "test")}
counts = {s: 0 for s in files}
for i, (difficulty, q, a, matcher) in enumerate(tasks):
    s = split_of(i)
    m = {"type": "number", "abs_tol": 0.01} if matcher == "number" else {"type": "exact"}
    files[s].write(json.dumps({"id": f"shop-{i:04d}", "suite": "mcp", "split": s, "difficulty": difficulty, "instruction": q, "tools": tools,
                               "data": {"kind": "mcp", "server": "sqlite"},
                               "expected": {"kind": "answer", "answer": a, "matcher": m}, "max_turns": 4}) + "\n")
    counts[s] += 1
print(f"{db}: {len(products)} products, {len(customers)} customers, {len(orders)} orders; tasks: {counts}")
