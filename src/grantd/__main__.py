from grantd.cli import main

main()
