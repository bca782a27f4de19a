from services.market.cli import main

main()
